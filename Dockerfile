# vecap's worker image for Beam on Dataflow (--sdk_container_image=IMAGE) and on Flink
# (--environment_type=DOCKER --environment_config=IMAGE). Build from the repository root:
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/vecap-worker:0.1.0 .
#
# The base is Apache Beam's Python SDK image for exactly the Beam and Python versions vecap pins
# (pyproject.toml: apache-beam==2.77.0; Python 3.11): it carries the SDK harness entrypoint
# (/opt/apache/beam/boot) that the runner starts, so this file sets no ENTRYPOINT or CMD.
FROM apache/beam_python3.11_sdk:2.77.0

# NVIDIA_*: on a Flink node whose Docker daemon runs the NVIDIA runtime by default, the SDK
# containers that --environment_type=DOCKER starts (Beam passes no --gpus) see the GPUs.
# TOKENIZERS_PARALLELISM, VLLM_WORKER_MULTIPROC_METHOD: the SDK harness runs many threads (gRPC,
# downloads); nothing may fork it with them alive (tokenizers' pool, vLLM's engine processes).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TOKENIZERS_PARALLELISM=false \
    VLLM_WORKER_MULTIPROC_METHOD=spawn

# CUDA torch and vLLM first, pinned together: vLLM 0.32.0 is the version vecap's vLLM tests run
# (scripts/setup_vllm_venv.sh installs its CPU build) and is built against torch 2.13.0. The
# Linux x86_64 torch wheels on PyPI bundle the CUDA runtime libraries, so no CUDA base image is
# needed; the GPU driver comes from the worker (Dataflow: install-nvidia-driver).
RUN pip install torch==2.13.0 vllm==0.32.0

# vecap with its `vllm`, `gcs` and `s3` extras (gs:// and s3:// inputs and outputs), resolved
# from the same pyproject.toml as a local install, so the worker runs the dependencies the tests
# ran. apache-beam==2.77.0 is already in the base image.
WORKDIR /opt/vecap
COPY pyproject.toml README.md ./
COPY vecap ./vecap
COPY schemas ./schemas
COPY pipeline ./pipeline
COPY llava_recap ./llava_recap
COPY llm_fusion ./llm_fusion
COPY clip_trainer ./clip_trainer
RUN pip install ".[vllm,gcs,s3]" && python -c "import pipeline.run, llava_recap.stage, llm_fusion.stage, vllm, gcsfs, s3fs"
WORKDIR /
