// @ts-check
/** Wiring: store + history + views, the preview requests (the newest edit wins), files, keys. */

import * as api from "./api.js";
import { ReplaceHints, SetGlobal, ToggleBox, UpdateHint, RemoveHint } from "./commands.js";
import { hintColor, rgbToLab } from "./color.js";
import { History } from "./history.js";
import { fromHintSet, toHintSet } from "./hintfile.js";
import { GamutPicker, swatches } from "./palette.js";
import { Store } from "./store.js";
import { PictureView } from "./view.js";

const $ = (/** @type {string} */ id) => /** @type {any} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);
// ?preview=png: lossless previews (default JPEG: smaller, faster); ?size=S: processing size (default: the server's)
const PREVIEW_FORMAT = params.get("preview") === "png" ? "png" : "jpeg";
const SIZE = params.get("size");

const store = new Store();
const history = new History(store);
const el = {
  grey: $("grey"), result: $("result"), compare: $("compare"), stage: $("stage"), drop: $("dropzone"),
  message: $("message"), busy: $("busy"), undo: $("undo"), redo: $("redo"),
};

/** Per-preview bookkeeping: ``seq`` counts requests; the picture shows ``shown``. */
const preview = { seq: 0, shown: 0, controller: /** @type {AbortController | null} */ (null), url: "",
  /** settles when the newest preview request has (suggestions wait for it: previews come first) */
  pending: Promise.resolve() };
/** The opened File (kept to reopen it when the server closed its session). */
let openedFile = /** @type {File | null} */ (null);
let greyPixels = /** @type {ImageData | null} */ (null);

// ----------------------------------------------------------------------------- messages
function showMessage(text, kind = "error") {
  el.message.textContent = text;
  el.message.className = `message ${kind === "info" ? "info" : ""}`;
  el.message.hidden = !text;
}

function setBusy(text) { el.busy.textContent = text; }

// ----------------------------------------------------------------------------- lightness
/** L* of the input at image pixel (x, y), read from the grey preview (its pixels are L with a = b = 0). */
function lightnessAt(x, y) {
  const s = store.state.session;
  if (!greyPixels || !s) return 50;
  const px = Math.min(greyPixels.width - 1, Math.floor(((x + 0.5) / s.width) * greyPixels.width));
  const py = Math.min(greyPixels.height - 1, Math.floor(((y + 0.5) / s.height) * greyPixels.height));
  const v = greyPixels.data[(py * greyPixels.width + px) * 4];
  return rgbToLab([v, v, v])[0];
}

const view = new PictureView({
  store, history, overlays: [$("overlay-input"), $("overlay-result")], lightnessAt,
  onDragEnd: () => requestPreview(),
});

// ----------------------------------------------------------------------------- opening
async function openFile(file) {
  if (!file) return;
  showMessage("");
  setBusy("Opening…");
  try {
    const info = await api.openImage(file, SIZE);
    openedFile = file;
    const keepHints = store.state.session && store.state.session.width === info.width
      && store.state.session.height === info.height && reopening;
    if (!keepHints) {
      store.state.hints = [];
      store.state.exclude = [];
      store.state.selected = null;
      history.clear();
    }
    store.set({ session: info }, "session");
    el.grey.src = api.greyUrl(info.session);
    await el.grey.decode();
    const c = document.createElement("canvas");
    c.width = el.grey.naturalWidth;
    c.height = el.grey.naturalHeight;
    const ctx = /** @type {CanvasRenderingContext2D} */ (c.getContext("2d", { willReadFrequently: true }));
    ctx.drawImage(el.grey, 0, 0);
    greyPixels = ctx.getImageData(0, 0, c.width, c.height);
    el.drop.hidden = true;
    $("pane-input").hidden = false;
    $("pane-result").hidden = false;
    renderAll();
    requestPreview();
  } catch (e) {
    showMessage(`${file.name}: ${e instanceof Error ? e.message : e}`);
  } finally {
    setBusy("");
  }
}

let reopening = false;
async function reopen() {
  if (!openedFile) return;
  reopening = true;
  try { await openFile(openedFile); } finally { reopening = false; }
}

function sessionGone(e) {
  showMessage(`${e.message}`);
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = "Reopen the photo";
  b.addEventListener("click", () => { showMessage(""); reopen(); });
  el.message.append(" ", b);
}

// ----------------------------------------------------------------------------- previews
/** Ask for a preview of the current state; an older request still running is cancelled (the
 * server answers it 409 "superseded") and only the newest answer is shown. */
function requestPreview() {
  const s = store.state.session;
  if (!s || view.dragging) return;
  const seq = ++preview.seq;
  if (preview.controller) preview.controller.abort();
  const controller = new AbortController();
  preview.controller = controller;
  setBusy("Colorizing…");
  const request = api.preview(s.session, { ...store.editBody(), format: PREVIEW_FORMAT }, controller.signal);
  preview.pending = request.then(() => {}, () => {});
  request.then((blob) => {
    if (seq !== preview.seq) return;
    const url = URL.createObjectURL(blob);
    const old = preview.url;
    preview.url = url;
    const done = () => {
      if (old) URL.revokeObjectURL(old);
      preview.shown = seq;
      el.result.dataset.seq = String(seq);
      if (seq === preview.seq) setBusy("");
    };
    el.result.addEventListener("load", done, { once: true });
    el.result.src = url;
    el.compare.src = url;
  }).catch((e) => {
    if (seq !== preview.seq) return;
    if ((e && e.name === "AbortError") || (e instanceof api.ApiError && e.superseded)) return;
    setBusy("");
    if (e instanceof api.ApiError && e.sessionGone) sessionGone(e);
    else showMessage(`Preview failed: ${e instanceof Error ? e.message : e}`);
  });
}

// ----------------------------------------------------------------------------- rendering
function renderAll() {
  const st = store.state;
  const has = !!st.session;
  el.undo.disabled = !history.canUndo;
  el.redo.disabled = !history.canRedo;
  for (const id of ["save-hints", "download", "load-hints", "reference-file", "use-saturation", "clear-points"]) {
    $(id).disabled = !has || (id === "clear-points" && !st.hints.length);
  }
  const noGlobal = has && st.session.unsupported && st.session.unsupported.global_hints;
  if (noGlobal) {
    $("reference-file").disabled = true;
    $("use-saturation").disabled = true;
  }
  $("global-unsupported").textContent = noGlobal ? `Not available: ${noGlobal}` : "";
  $("saturation").disabled = !has || st.global.saturation === null;
  $("use-saturation").checked = st.global.saturation !== null;
  if (st.global.saturation !== null) {
    $("saturation").value = String(st.global.saturation);
    $("saturation-value").textContent = st.global.saturation.toFixed(2);
  }
  $("clear-reference").disabled = !st.global.histogram;
  $("reference-name").textContent = st.global.histogram ? (st.global.reference || "reference") : "None.";
  if (!st.global.histogram) $("reference-thumb").hidden = true;

  const sel = store.hint(st.selected);
  $("remove-point").disabled = !sel;
  $("point-info").textContent = sel
    ? `Point at (${sel.x}, ${sel.y}), ${sel.rgb || `ab ${sel.ab.map((v) => v.toFixed(0)).join(", ")}`}, patch ${sel.size}`
    : (has ? "No point selected: click the picture to add one." : "No photo open.");
  if (sel) $("patch-size").value = String(sel.size);

  const list = $("hint-list");
  list.replaceChildren(...st.hints.map((h, i) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("aria-pressed", String(h.id === st.selected));
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = hintColor(h, lightnessAt(h.x, h.y));
    b.append(dot, `Point ${i + 1} (${h.x}, ${h.y})`);
    b.addEventListener("click", () => store.set({ selected: h.id }));
    li.append(b);
    return li;
  }));

  const inst = $("instances");
  if (has && st.session.instances.length) {
    inst.replaceChildren(...st.session.instances.map((x, i) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = !st.exclude.includes(i);
      box.addEventListener("change", () => history.execute(new ToggleBox(i)));
      const score = x.score === null ? "" : ` ${(x.score * 100).toFixed(0)} %`;
      label.append(box, ` ${i + 1} ${x.name || "object"}${score} — include`);
      li.append(label);
      return li;
    }));
  } else {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = has ? "None detected." : "No photo open.";
    inst.replaceChildren(li);
  }
  swatches($("recent"), st.recent.map((rgb) => ({ rgb })), applyColor, "Recent colour");
  view.draw();
}

// ----------------------------------------------------------------------------- colour
function applyColor(rgb) {
  const sel = store.hint(store.state.selected);
  store.useColor(rgb);
  if (sel && sel.rgb !== rgb) history.execute(new UpdateHint(sel, { rgb }));
}

const picker = new GamutPicker($("gamut"), applyColor);
let suggestController = /** @type {AbortController | null} */ (null);
let lastSelected = /** @type {number | null} */ (null);

async function selectionChanged() {
  const st = store.state;
  const sel = store.hint(st.selected);
  if (!sel || !st.session) {
    $("suggestions").replaceChildren(Object.assign(document.createElement("span"),
      { className: "muted", textContent: "Select a point." }));
    picker.show(50, null).catch(() => {});
    return;
  }
  const L = lightnessAt(sel.x, sel.y);
  picker.show(L, sel.rgb || null).catch((e) => showMessage(`Colour picker: ${e.message || e}`));
  const noSuggestions = st.session.unsupported && st.session.unsupported.suggestions;
  if (noSuggestions) {
    $("suggestions").replaceChildren(Object.assign(document.createElement("span"),
      { className: "muted", textContent: `Not available: ${noSuggestions}` }));
    return;
  }
  if (suggestController) suggestController.abort();
  const controller = new AbortController();
  suggestController = controller;
  await preview.pending; // the preview of this edit first; suggestions are second
  if (controller.signal.aborted || store.state.selected !== sel.id) return;
  const others = st.hints.filter((h) => h.id !== sel.id).map(Store.apiHint);
  const body = { ...store.editBody(), hints: others, x: sel.x, y: sel.y, k: 8 };
  try {
    const r = await api.suggest(st.session.session, body, controller.signal);
    swatches($("suggestions"), r.colors, applyColor, "Suggested colour");
  } catch (e) {
    if (e && e.name === "AbortError") return;
    $("suggestions").replaceChildren(Object.assign(document.createElement("span"),
      { className: "muted", textContent: `No suggestions: ${e.message || e}` }));
  }
}

// ----------------------------------------------------------------------------- store events
store.subscribe((reason) => {
  renderAll();
  if (reason === "edit") requestPreview();
  const sel = store.state.selected;
  const h = store.hint(sel);
  const key = h ? `${h.id}:${h.x}:${h.y}` : null;
  if (key !== lastSelected && !view.dragging) {
    lastSelected = /** @type {any} */ (key);
    selectionChanged();
  }
});

// ----------------------------------------------------------------------------- controls
$("open-file").addEventListener("change", (e) => { openFile(e.target.files[0]); e.target.value = ""; });
el.undo.addEventListener("click", () => history.undo());
el.redo.addEventListener("click", () => history.redo());
$("remove-point").addEventListener("click", () => {
  const sel = store.hint(store.state.selected);
  if (sel) history.execute(new RemoveHint(sel));
});
$("clear-points").addEventListener("click", () => history.execute(new ReplaceHints(store.state, [], null)));
$("patch-size").addEventListener("change", (e) => {
  const v = Math.max(1, Math.min(15, Math.round(Number(e.target.value)) || 1));
  e.target.value = String(v);
  store.set({ patchSize: v });
  const sel = store.hint(store.state.selected);
  if (sel && sel.size !== v) history.execute(new UpdateHint(sel, { size: v }));
});
for (const r of document.querySelectorAll('input[name="view"]')) {
  r.addEventListener("change", (e) => {
    const slider = /** @type {HTMLInputElement} */ (e.target).value === "slider";
    el.stage.className = `stage ${slider ? "slider" : "side"}`;
    el.compare.hidden = !slider;
    $("compare-label").hidden = !slider;
    updateCompare();
    view.draw();
  });
}
function updateCompare() {
  const pos = Number($("compare-pos").value);
  el.compare.style.clipPath = `inset(0 0 0 ${pos}%)`;
}
$("compare-pos").addEventListener("input", updateCompare);

// global hints
$("reference-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  try {
    setBusy("Reading the reference…");
    const r = await api.reference(file);
    const thumb = $("reference-thumb");
    thumb.src = URL.createObjectURL(file);
    thumb.hidden = false;
    history.execute(new SetGlobal(store.state.global, { histogram: r.histogram, reference: file.name }));
  } catch (err) {
    showMessage(`${file.name}: ${err.message || err}`);
  } finally {
    setBusy("");
  }
});
$("clear-reference").addEventListener("click", () =>
  history.execute(new SetGlobal(store.state.global, { histogram: null, reference: null })));
$("use-saturation").addEventListener("change", (e) => {
  const v = e.target.checked ? Number($("saturation").value) : null;
  history.execute(new SetGlobal(store.state.global, { saturation: v }));
});
$("saturation").addEventListener("input", (e) => { $("saturation-value").textContent = Number(e.target.value).toFixed(2); });
$("saturation").addEventListener("change", (e) =>
  history.execute(new SetGlobal(store.state.global, { saturation: Number(e.target.value) })));

// hint sets
$("save-hints").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(toHintSet(store.state), null, 1)], { type: "application/json" });
  saveBlob(blob, `${baseName()}-hints.json`);
});
$("load-hints").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file || !store.state.session) return;
  try {
    const text = await file.text();
    const { hints, global } = fromHintSet(text, store.state.session, () => store.state.nextId++);
    history.execute(new ReplaceHints(store.state, hints, global));
    showMessage(`Loaded ${hints.length} point(s) from ${file.name}.`, "info");
  } catch (err) {
    showMessage(`${file.name}: ${err.message || err}`);
  }
});

// download
$("download").addEventListener("click", async () => {
  const s = store.state.session;
  if (!s) return;
  try {
    setBusy("Rendering full resolution…");
    const blob = await api.result(s.session, { ...store.editBody(), format: "png" });
    saveBlob(blob, `${baseName()}-colorized.png`);
  } catch (e) {
    if (e instanceof api.ApiError && e.sessionGone) sessionGone(e);
    else showMessage(`Download failed: ${e.message || e}`);
  } finally {
    setBusy("");
  }
});

function baseName() {
  return openedFile ? openedFile.name.replace(/\.[^.]*$/, "") || "photo" : "photo";
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
}

// drag and drop
document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dragging"); });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  document.body.classList.remove("dragging");
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) openFile(file);
});

// keyboard: undo / redo (not while typing in a text or number field)
document.addEventListener("keydown", (e) => {
  const t = /** @type {HTMLElement} */ (e.target);
  const typing = t instanceof HTMLInputElement && ["text", "number"].includes(t.type);
  if (typing || !(e.ctrlKey || e.metaKey)) return;
  const k = e.key.toLowerCase();
  if (k === "z" && !e.shiftKey) { e.preventDefault(); history.undo(); }
  else if ((k === "z" && e.shiftKey) || k === "y") { e.preventDefault(); history.redo(); }
});

renderAll();

/** For tests and the benchmark: the store, the history and the preview counters. */
// @ts-ignore
window.instcolorEditor = { store, history, preview, requestPreview, openFile, lightnessAt };
