"""`python app.py`: the Transformer Anatomy web app (the Hugging Face Space runs this file too)."""

from space import build_demo, launch

demo = build_demo()

if __name__ == "__main__":
    launch(demo)
