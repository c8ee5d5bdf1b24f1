FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0
RUN useradd --create-home studio && mkdir -p /app/var && chown studio /app/var
USER studio
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "finetune_studio.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
