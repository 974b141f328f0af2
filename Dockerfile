# PASSNet on Gadgetron 4 (CUDA). Build:  docker build -t passnet-gadgetron .
# Run:    docker run --rm --gpus all -p 9002:9002 passnet-gadgetron
# Then:   gadgetron_ismrmrd_client -f in.h5 -c passnet_raw.xml -o out.h5
# Not built in this project's CI (no Docker there). What it sets up is what
# tests/test_real_gadgetron.py proves with the real Gadgetron 4.7.2 server: this venv's python
# first on PATH, the chains in share/gadgetron/config, a storage server for the buffered
# chains, PASSNET_STEP_CONFIG for distributed workers (docs/gadgetron.md, "Real Gadgetron").
ARG BASE_IMAGE=ghcr.io/gadgetron/gadgetron/gadgetron_ubuntu_rt_cuda:latest
FROM ${BASE_IMAGE}

# The rt images install Gadgetron and its Python (with the `gadgetron` package) in a conda
# environment; Gadgetron starts external steps with the `python3` found on PATH.
ENV GADGETRON_ENV=/opt/conda/envs/gadgetron
ENV PATH=${GADGETRON_ENV}/bin:${PATH}
# Gadgetron's own advice for machines that run several reconstructions at once.
ENV OMP_WAIT_POLICY=PASSIVE
# A distributed worker's step gets no <configuration> from Gadgetron; it reads the settings of
# the PASSNet step in this shipped chain instead (gadgets.passnet_gadget.step_params).
ENV PASSNET_STEP_CONFIG=passnet_distributed
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
# The base image's entrypoint starts the Gadgetron server on 9002, and Gadgetron starts the
# conda environment's mrd-storage-server itself (noise covariances for NoiseAdjustGadget;
# the buffered chains need it). Headers from other ISMRMRD releases: passnet gadgetron-header. For the pure-Python
# server instead:
#   docker run --rm --gpus all -p 9002:9002 --entrypoint passnet passnet-gadgetron \
#       serve --host 0.0.0.0 --port 9002
