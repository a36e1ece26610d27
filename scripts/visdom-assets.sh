#!/usr/bin/env bash
# Put visdom's browser scripts and styles in place from npm packages, so its page renders with
# no CDN at all. `python -m visdom.server` downloads from public CDNs at every start those it
# does not find; `python visualize.py serve` never does, so without this step its page has no
# plots.
#   scripts/visdom-assets.sh [PYTHON]      (make visdom-assets runs it with .venv/bin/python)
set -euo pipefail
PY=${1:-python3}
STATIC=$("$PY" -c "import os, visdom.server; print(os.path.join(os.path.dirname(os.path.dirname(visdom.server.__file__)), 'static'))")
VERSION=$("$PY" -c "import os, visdom.server; print(open(os.path.join(os.path.dirname(os.path.dirname(visdom.server.__file__)), 'VERSION')).read().strip())")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm init -y > /dev/null
# the versions visdom 0.2.4's own build script names; their peer ranges disagree, but only
# the built files are copied, so peer dependencies do not matter
npm install --no-audit --no-fund --loglevel=error --ignore-scripts --legacy-peer-deps \
    jquery@3.1.1 bootstrap@3.3.7 react@16.2.0 react-dom@16.2.0 react-modal@3.1.10 \
    plotly.js-dist-min@2.11.1 sjcl@1.0.7 layout-bin-packer@1.4.0 d3@3.5.17 \
    d3-selection-multi@1.0.1 save-svg-as-png@1.4.17 react-resizable@1.4.6 \
    react-grid-layout@0.16.3 classnames@2.2.5 mathjax@2.7.5 > /dev/null
M=node_modules
mkdir -p "$STATIC/js" "$STATIC/css" "$STATIC/fonts"
cp $M/jquery/dist/jquery.min.js "$STATIC/js/jquery.min.js"
cp $M/bootstrap/dist/js/bootstrap.min.js "$STATIC/js/bootstrap.min.js"
cp $M/react/umd/react.production.min.js "$STATIC/js/react-react.min.js"
cp $M/react-dom/umd/react-dom.production.min.js "$STATIC/js/react-dom.min.js"
cp $M/react-modal/dist/react-modal.min.js "$STATIC/js/react-modal.min.js"
cp $M/plotly.js-dist-min/plotly.min.js "$STATIC/js/plotly-plotly.min.js"
cp $M/sjcl/sjcl.js "$STATIC/js/sjcl.js"
cp $M/layout-bin-packer/dist/layout-bin-packer.js "$STATIC/js/layout_bin_packer.js"
cp $M/layout-bin-packer/dist/layout-bin-packer.js.map "$STATIC/js/layout-bin-packer.js.map"
cp $M/d3/d3.min.js "$STATIC/js/d3.v3.min.js"
cp $M/d3-selection-multi/build/d3-selection-multi.js "$STATIC/js/d3-selection-multi.v1.js"
cp $M/save-svg-as-png/lib/saveSvgAsPng.js "$STATIC/js/saveSvgAsPng.js"
cp $M/react-resizable/css/styles.css "$STATIC/css/react-resizable-styles.css"
cp $M/react-grid-layout/css/styles.css "$STATIC/css/react-grid-layout-styles.css"
cp $M/bootstrap/dist/css/bootstrap.min.css "$STATIC/css/bootstrap.min.css"
cp $M/classnames/index.js "$STATIC/fonts/classnames"
cp $M/bootstrap/dist/fonts/glyphicons-halflings-regular.* "$STATIC/fonts/"
# visdom's build looks for the svg font under its address's name, fragment and all
# (`python -m visdom.server` fetched it at every start, an ERROR line where offline)
cp $M/bootstrap/dist/fonts/glyphicons-halflings-regular.svg \
    "$STATIC/fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"
rm -rf "$STATIC/js/mathjax/2.7.5"
mkdir -p "$STATIC/js/mathjax/2.7.5"
for part in MathJax.js config extensions jax localization; do
    cp -r "$M/mathjax/$part" "$STATIC/js/mathjax/2.7.5/"
done
echo "$VERSION" > "$STATIC/version.built"
echo "visdom's page assets are in $STATIC"
