#!/usr/bin/env bash
# Install the system libraries Music RNN uses, where that can be done without asking.
#   libfluidsynth3  - FluidSynth, for rendering MIDI to audio (pyfluidsynth loads it)
#   chromium        - only with --browser: the headless browser of the JupyterLab end-to-end test
# As root with apt-get (Debian/Ubuntu, CI, containers) it installs them; otherwise it says how.
set -u
want=(libfluidsynth3)
[ "${1:-}" = "--browser" ] && want+=(chromium)

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
      || echo "warning: could not install ${missing[*]} with apt-get; see the README's 'System libraries'."
  fi
  exit 0
fi

if ldconfig -p 2>/dev/null | grep -q libfluidsynth; then
  exit 0
fi
cat <<MSG
note: FluidSynth (the library) is not installed, so audio falls back to a simple built-in synth.
      Install it with one of:
        sudo apt-get install libfluidsynth3      # Debian/Ubuntu
        brew install fluid-synth                 # macOS
        conda install -c conda-forge fluidsynth  # conda (see environment.yml)
MSG
exit 0
