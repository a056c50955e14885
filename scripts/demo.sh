#!/usr/bin/env bash
# The main job: set up, build the AV-digits demo set, catalog it, train SeLaVi (cpu-small) and open
# the Studio on the result. Every step reuses what an earlier run already built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NUMBA_THREADING_LAYER=workqueue
demo=${SELAVI_DEMO_DIR:-data/avdigits}
catalog=${SELAVI_DEMO_CATALOG:-data/catalog}
run=${SELAVI_DEMO_RUN:-runs/demo}
variant=${SELAVI_DEMO_VARIANT:-balanced}

.venv/bin/selavi demo-data "$demo" --variant "$variant"
.venv/bin/selavi ingest "$demo" --format csv --out "$catalog"
.venv/bin/selavi previews "$catalog"
if [ ! -f "$run/run.json" ]; then
  resume=()
  [ -f "$run/checkpoint.pt" ] && resume=(--resume)  # an interrupted training continues
  .venv/bin/selavi train "$catalog" --out "$run" --preset cpu-small "${resume[@]}"
fi
.venv/bin/selavi evaluate "$run" --no-anmi || true
echo "The Studio: open http://127.0.0.1:${SELAVI_PORT:-8501} (Ctrl-C stops it)"
exec .venv/bin/selavi app "$run" --port "${SELAVI_PORT:-8501}" "$@"
