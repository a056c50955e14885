# SeLaVi Studio: the app and the CLI in one image.
#   docker build -t selavi-studio .
#   docker run selavi-studio selavi --help                                      # any CLI stage
#
# The Studio listens on every interface of the container, so it signs users in (selavi app --auth): create
# the users file once (asks for the password twice; hashes only, mode 0600), then start it:
#   docker run -it --rm -v "$PWD/auth:/work/auth" selavi-studio selavi users add ana --file /work/auth/users.toml
#   docker run -p 8501:8501 -v "$PWD/runs:/work/runs" -v "$PWD/auth:/work/auth" selavi-studio   # /work/runs/demo
# Behind a reverse proxy that signs users in and sets X-Forwarded-User, trust that header instead, and publish
# the port to the proxy only (anyone who reaches the Studio directly could send the header):
#   docker run -p 127.0.0.1:8501:8501 -v "$PWD/runs:/work/runs" selavi-studio \
#       selavi app /work/runs/demo --host 0.0.0.0 --port 8501 --auth-header X-Forwarded-User
# Without either, `selavi app` refuses --host 0.0.0.0 (single-user mode stays on 127.0.0.1) unless --insecure.
FROM python:3.11-slim-bookworm

# ffmpeg for the decode benchmark; espeak-ng for the demo speech fallback.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /work
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The project itself, installed like any package (not editable): `selavi` and the Studio's pages come from
# site-packages, and the sources are removed after the build, so nothing runs from a checkout.
COPY pyproject.toml README.md /tmp/selavi-src/
COPY selavi_core /tmp/selavi-src/selavi_core
COPY app /tmp/selavi-src/app
RUN pip install --no-cache-dir --no-deps /tmp/selavi-src && rm -rf /tmp/selavi-src
COPY assets ./assets

ENV NUMBA_THREADING_LAYER=workqueue \
    PYTHONUNBUFFERED=1
EXPOSE 8501
CMD ["selavi", "app", "/work/runs/demo", "--host", "0.0.0.0", "--port", "8501", "--auth", "/work/auth/users.toml"]
