#!/usr/bin/env bash
# The GPU checklist in one command, for a lent GPU machine that runs a copy of this repository (no .git, no
# internet; pyro-ppl and arviz installed beside it). Each stage runs under its own time limit, writes its log to
# $OUT/STAGE.log, and the result files written so far are packed into $OUT/results.tgz after every stage, so a
# stage that runs out of time loses only itself:
#
#   env        nvidia-smi, torch and JAX devices
#   test_cuda  python -m pytest tests/test_cuda.py
#   speed      benchmarks/speed.py --device cuda: eager, --jit, --compile, the hand-written loops and NumPyro
#   ais_elbo   benchmarks/ais_mnist.py --headline for the VAE: IS at K = 5000 on all 10,000 test images, AIS and
#   ais_hvae   IS on all 10,000 (AIS batched by thousands on the GPU), BDMC; likewise the HVAE with a VampPrior
#   speed_iw   speed.py for Burda's IWAE bound at K = 50 (the epoch time behind his 3280-epoch budget)
#   ladder_ais IS at K = 5000, AIS (in the guide's reparameterization) and BDMC on all 10,000 test images for the
#              ladder hvae (LADDER_RUN=folder), whose AIS in the diagonal coordinates did not converge on the CPU
#   draw_ais   AIS on a trained DRAW run (DRAW_RUN=folder) at T = 400 on the 100 test images of ais_draw_mnist.json
#              (one CPU thread reached T = 100 on them in half an hour)
#   trained    the zoo's trained models, continued across leases: the runs of benchmarks/trained_models.py's
#              RECIPES named in TRAINED_MODELS (default: `trained_models.py pending`, those whose full recipe is not
#              finished, the published tables' long budgets first: Burda's IWAE k = 50 over 3,280 epochs, the
#              VampPrior and HVAE + VampPrior to 2,000 epochs with early stopping) train on in turn from their
#              checkpoints in runs/trained for TRAINED_SECONDS in all (default 300), each until it is finished or the
#              time is spent, stopping at an epoch's checkpoint; the folders come back in $OUT/trained_runs.tgz. Carry runs/trained to the next lease
#              (the device tool's carry) and the same command trains on, bit for bit as one uninterrupted run; a
#              finished run is exported and scored with benchmarks/trained_models.py export|score NAME
#
#   OUT=folder PYRO_ZOO_GIT_COMMIT=sha bash benchmarks/gpu_checklist.sh DATA_DIR     # on the GPU machine
#   GPU_CHECK_STAGES="env test_cuda draw_ais" DRAW_RUN=.gpu_runs/draw_t16 ...   # a chosen few stages
#   GPU_CHECK_SMOKE=1 OUT=/tmp/out bash benchmarks/gpu_checklist.sh ../shared/data   # tiny sizes, any machine
#   GPU_CHECK_SUFFIX=_h100 ...      # result names end in _cuda_h100, beside another card's _cuda files
#
# On 2026-11-26's H200 the stages took 10, 52, 69, 109 and 37 s, and ais_hvae ran out of its 190 s limit in the
# headline's second K = 5000 pass, which ais_mnist.py no longer makes when --limit covers the test split.
# On the second H200 lease (7910fec) env and test_cuda took 12 and 51 s; DRAW's AIS at T = 100 and 400 on 500 images
# did not finish in 240 s, nor T = 1600 on 100 in 200 s: each HMC gradient runs DRAW's 16-step recurrence, which
# keeps a GPU latency-bound, so the stage is now one T on the CPU file's 100 images.
# On an H100 (888138d) env, test_cuda, speed and speed_iw took 7, 37, 47 and 25 s; DRAW's AIS at T = 800 on the 100
# images did not finish in 320 s (IS at K = 1000 did), so draw_ais stays at T = 400, which the CPU file already has.
# Result files go to benchmarks/results/ of the copy (names ending in _cuda); bring results.tgz back, unpack it
# into the checkout and run `pyro-zoo report benchmarks/results`.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: OUT=folder bash benchmarks/gpu_checklist.sh DATA_DIR}
: "${OUT:?set OUT to the folder for the logs and results.tgz}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYRO_ZOO_OFFLINE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
SMOKE=${GPU_CHECK_SMOKE:-0}
SUFFIX=${GPU_CHECK_SUFFIX:-}
DEVICE=cuda
if [ "$SMOKE" = 1 ]; then DEVICE=cpu; fi
mkdir -p "$OUT" runs/gpu

pack() {
    find benchmarks/results -newer "$MARK" -type f > "$MARK.new"
    tar czf "$OUT/results.tgz.part" -T "$MARK.new" && mv "$OUT/results.tgz.part" "$OUT/results.tgz"
}

STAGES=" ${GPU_CHECK_STAGES:-env test_cuda speed ais_elbo ais_hvae speed_iw trained} "
stage() {                       # stage NAME SECONDS COMMAND...: run it under a time limit, log it, pack results
    local name=$1 limit=$2 t0 rc
    shift 2
    case "$STAGES" in *" $name "*) ;; *) return 0 ;; esac
    t0=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: exit $rc in $(( $(date +%s) - t0 )) s (limit $limit s)" | tee -a "$OUT/stages.txt"
    tail -n 4 "$OUT/$name.log"
    pack
}

MARK=$(mktemp)                  # outside $OUT: the device tool brings back at most 8 files
touch "$MARK"
sleep 1
# trained: each named run trains for its share of the time, then every run folder is packed for the next lease
train_trained() {
    local names=${TRAINED_MODELS:-$(python3 benchmarks/trained_models.py pending --runs-dir runs/trained)}
    local deadline=$(( $(date +%s) + ${TRAINED_SECONDS:-300} )) left name
    [ -n "$names" ] || { echo "no trained model left to train"; return 0; }
    # in order, the long budgets first: each run trains on until it is finished or the time is spent, so the
    # leases add up to finished runs one at a time instead of advancing all of them a little
    for name in $names; do
        left=$(( deadline - $(date +%s) ))
        [ "$left" -ge 30 ] || break
        timeout --signal=INT "$left" python3 benchmarks/trained_models.py train "$name" --data-dir "$DATA" \
            ${TRAINED_FLAGS:-}
        echo "$name: exit $? after at most $left s"
    done
    tar czf "$OUT/trained_runs.tgz.part" --exclude='*-score' runs/trained && mv "$OUT/trained_runs.tgz.part" "$OUT/trained_runs.tgz"
}
export -f train_trained
export DATA OUT

if [ "$SMOKE" = 1 ]; then
    stage env 30 python3 -c "import torch, zoo; print(torch.__version__, zoo.__file__)"
    stage test_cuda 60 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
    stage speed 300 python3 benchmarks/speed.py --data-dir "$DATA" --device $DEVICE --rounds 1 --segment 500 --numpyro \
        --name speed_smoke
    stage ais_elbo 600 python3 benchmarks/ais_mnist.py --data-dir "$DATA" --runs elbo --headline --headline-limit 20 \
        --limit 20 --is-samples 50 --headline-samples 50 --temperatures 5,10 --chains 2 --leapfrog 2 --bdmc-data 4 \
        --bdmc-temperatures 5,10 --bdmc-chains 2 --ais-batch-size 10 --out runs/gpu/ais --runs-dir runs/gpu/headline \
        --name ais_mnist_smoke
    TRAINED_MODELS=${TRAINED_MODELS:-vae-mnist-iwae} TRAINED_SECONDS=${TRAINED_SECONDS:-60} stage trained 120 bash -c train_trained
    exit 0
fi
stage env 20 bash -c "nvidia-smi -L; python3 -c 'import torch, jax, pyro, zoo; print(torch.__version__, \
torch.cuda.get_device_name(), jax.__version__, jax.devices(), pyro.__version__, zoo.__file__)'"
stage test_cuda 100 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
stage speed 140 python3 benchmarks/speed.py --data-dir "$DATA" --device cuda --rounds 8 --segment 10000 --numpyro \
    --name speed_cuda${SUFFIX}
stage ais_elbo 200 python3 benchmarks/ais_mnist.py --data-dir "$DATA" --runs elbo --headline --limit 10000 \
    --temperatures 100,400 --chains 8 --bdmc-data 200 --bdmc-temperatures 100,200 --ais-batch-size 10000 \
    --out runs/gpu/ais --runs-dir runs/gpu/headline --name ais_mnist_elbo_cuda${SUFFIX}
stage ais_hvae 190 python3 benchmarks/ais_mnist.py --data-dir "$DATA" --runs hvae --headline --limit 10000 \
    --temperatures 100,400 --chains 8 --bdmc-data 200 --bdmc-temperatures 100,200 --ais-batch-size 10000 \
    --out runs/gpu/ais --runs-dir runs/gpu/headline --name ais_mnist_hvae_cuda${SUFFIX}
stage speed_iw 40 python3 benchmarks/speed.py --data-dir "$DATA" --device cuda --rounds 3 --segment 5000 \
    --objective iwae --particles 50 --name speed_cuda_iwae50${SUFFIX}
if [[ "$STAGES" == *" ladder_ais "* ]]; then
    : "${LADDER_RUN:?set LADDER_RUN to the trained ladder hvae run folder for the ladder_ais stage}"
fi
stage ladder_ais 330 python3 benchmarks/ais_mnist.py --data-dir "$DATA" --folders "hvae_ladder_gated=${LADDER_RUN:-}" \
    --limit 10000 --is-samples 5000 --temperatures 100,400 --chains 8 --bdmc-data 200 --bdmc-temperatures 100,400 \
    --ais-batch-size 10000 --out runs/gpu/ais --name ais_ladder_transport_mnist_cuda${SUFFIX}
if [[ "$STAGES" == *" draw_"* ]]; then
    : "${DRAW_RUN:?set DRAW_RUN to a trained DRAW run folder (checkpoint.pt and config.json) for the draw stages}"
fi
stage draw_ais 300 python3 benchmarks/ais_mnist.py --data-dir "$DATA" --folders "draw_t16=${DRAW_RUN:-}" --limit 100 \
    --is-samples 1000 --temperatures 400 --chains 4 --bdmc-data 0 --ais-batch-size 100 --out runs/gpu/ais \
    --name ais_draw_mnist_cuda${SUFFIX}
stage trained $(( ${TRAINED_SECONDS:-300} + 60 )) bash -c train_trained
