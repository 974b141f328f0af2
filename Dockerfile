# PASSNet on Gadgetron 4 (CUDA). Build:  docker build -t passnet-gadgetron .
# Run:    docker run --rm --gpus all -p 9002:9002 passnet-gadgetron
# Then:   gadgetron_ismrmrd_client -f in.h5 -c passnet_raw.xml -o out.h5
# Not built or run in this project's CI (no Docker there); see docs/gadgetron.md.
ARG BASE_IMAGE=ghcr.io/gadgetron/gadgetron/gadgetron_ubuntu_rt_cuda:latest
FROM ${BASE_IMAGE}

# The rt images install Gadgetron and its Python (with the `gadgetron` package) in a conda
# environment; Gadgetron starts external steps with the `python3` found on PATH.
ENV GADGETRON_ENV=/opt/conda/envs/gadgetron
ENV PATH=${GADGETRON_ENV}/bin:${PATH}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu121

WORKDIR /opt/passnet
COPY pyproject.toml README.md ./
COPY passnet_core ./passnet_core
COPY gadgets ./gadgets
COPY gadgetron_configs ./gadgetron_configs
COPY training ./training
COPY benchmarks ./benchmarks

# CUDA torch first, from PyTorch's index, so the package install keeps it.
RUN python3 -m pip install --no-cache-dir torch --index-url ${TORCH_INDEX} \
 && python3 -m pip install --no-cache-dir . \
 && python3 -c "import gadgets.passnet_gadget, gadgetron; print('PASSNet gadget importable')"

# Chains where Gadgetron looks them up by name (-c NAME): the documented location and the
# conda environment's share folder used by the conda-based images.
RUN for dir in /usr/local/share/gadgetron/config/ ${GADGETRON_ENV}/share/gadgetron/config/; do \
        mkdir -p "$dir" && cp gadgetron_configs/*.xml "$dir"; \
    done

EXPOSE 9002
# The base image's entrypoint starts the Gadgetron server on 9002. For the pure-Python
# server instead:
#   docker run --rm --gpus all -p 9002:9002 --entrypoint passnet passnet-gadgetron \
#       serve --host 0.0.0.0 --port 9002
