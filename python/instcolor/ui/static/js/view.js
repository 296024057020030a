// @ts-check
/** The picture panes: grey input and result (side by side, or one pane with a comparison slider),
 * with the hints and the detected boxes drawn on an overlay canvas. Pointer input becomes commands
 * in image pixels (scaled through getBoundingClientRect, so zoom and CSS sizing do not shift clicks). */

import { AddHint, RemoveHint, UpdateHint } from "./commands.js";
import { hintColor } from "./color.js";

const HIT_PX = 10; // CSS pixels within which a click takes an existing hint

export class PictureView {
  /** @param {{store: import("./store.js").Store, history: import("./history.js").History,
   *   overlays: HTMLCanvasElement[], lightnessAt: (x: number, y: number) => number,
   *   onDragEnd: () => void}} opts */
  constructor(opts) {
    this.store = opts.store;
    this.history = opts.history;
    this.overlays = opts.overlays;
    this.lightnessAt = opts.lightnessAt;
    this.onDragEnd = opts.onDragEnd;
    /** @type {null | {id: number, before: any, moved: boolean, pointer: number}} */
    this.drag = null;
    for (const c of this.overlays) this.attach(c);
    new ResizeObserver(() => this.draw()).observe(this.overlays[0]);
  }

  get dragging() { return this.drag !== null; }

  /** Client coordinates -> image pixel (integers inside the image). */
  toImage(canvas, clientX, clientY) {
    const s = this.store.state.session;
    const r = canvas.getBoundingClientRect();
    const x = Math.floor(((clientX - r.left) / r.width) * s.width);
    const y = Math.floor(((clientY - r.top) / r.height) * s.height);
    return [Math.max(0, Math.min(s.width - 1, x)), Math.max(0, Math.min(s.height - 1, y))];
  }

  /** The hint under a client point, or null. */
  hitTest(canvas, clientX, clientY) {
    const s = this.store.state.session;
    const r = canvas.getBoundingClientRect();
    let best = null;
    let bestD = HIT_PX;
    for (const h of this.store.state.hints) {
      const hx = r.left + ((h.x + 0.5) / s.width) * r.width;
      const hy = r.top + ((h.y + 0.5) / s.height) * r.height;
      const d = Math.hypot(hx - clientX, hy - clientY);
      if (d <= bestD) { best = h; bestD = d; }
    }
    return best;
  }

  /** @param {HTMLCanvasElement} canvas */
  attach(canvas) {
    canvas.addEventListener("pointerdown", (e) => {
      const st = this.store.state;
      if (!st.session || e.button !== 0) return;
      e.preventDefault();
      canvas.focus();
      const hit = this.hitTest(canvas, e.clientX, e.clientY);
      if (hit) {
        this.store.set({ selected: hit.id });
        this.drag = { id: hit.id, before: { ...hit }, moved: false, pointer: e.pointerId };
        canvas.setPointerCapture(e.pointerId);
      } else {
        const [x, y] = this.toImage(canvas, e.clientX, e.clientY);
        const hint = { id: st.nextId++, x, y, rgb: st.color, size: st.patchSize };
        this.history.execute(new AddHint(hint));
      }
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!this.drag || e.pointerId !== this.drag.pointer) return;
      const h = this.store.hint(this.drag.id);
      if (!h) return;
      const [x, y] = this.toImage(canvas, e.clientX, e.clientY);
      if (x !== h.x || y !== h.y) {
        h.x = x; h.y = y; this.drag.moved = true;
        this.draw();
      }
    });
    const end = (e) => {
      if (!this.drag || e.pointerId !== this.drag.pointer) return;
      const d = this.drag;
      this.drag = null;
      const h = this.store.hint(d.id);
      if (d.moved && h) this.history.execute(new UpdateHint(d.before, { x: h.x, y: h.y }));
      else this.store.notify("ui");
      this.onDragEnd();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("contextmenu", (e) => {
      e.preventDefault();
      if (!this.store.state.session) return;
      const hit = this.hitTest(canvas, e.clientX, e.clientY);
      if (hit) this.history.execute(new RemoveHint(hit));
    });
    canvas.addEventListener("keydown", (e) => this.key(e));
  }

  /** Keyboard on a picture: arrows move the selected hint (Shift: 10 px), Delete removes it,
   * Enter adds a hint at the centre (or beside the selected one), [ and ] select the previous/next. */
  key(e) {
    const st = this.store.state;
    if (!st.session) return;
    const sel = this.store.hint(st.selected);
    const step = e.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (e.key in moves && sel) {
      e.preventDefault();
      const [dx, dy] = moves[e.key];
      const x = Math.max(0, Math.min(st.session.width - 1, sel.x + dx));
      const y = Math.max(0, Math.min(st.session.height - 1, sel.y + dy));
      this.history.execute(new UpdateHint(sel, { x, y }));
    } else if ((e.key === "Delete" || e.key === "Backspace") && sel) {
      e.preventDefault();
      this.history.execute(new RemoveHint(sel));
    } else if (e.key === "Enter") {
      e.preventDefault();
      const s = st.session;
      const x = sel ? Math.min(s.width - 1, sel.x + Math.round(s.width / 20)) : Math.floor(s.width / 2);
      const y = sel ? sel.y : Math.floor(s.height / 2);
      this.history.execute(new AddHint({ id: st.nextId++, x, y, rgb: st.color, size: st.patchSize }));
    } else if ((e.key === "[" || e.key === "]") && st.hints.length) {
      e.preventDefault();
      const i = st.hints.findIndex((h) => h.id === st.selected);
      const n = st.hints.length;
      const j = i < 0 ? 0 : (i + (e.key === "]" ? 1 : n - 1)) % n;
      this.store.set({ selected: st.hints[j].id });
    }
  }

  draw() {
    const st = this.store.state;
    for (const canvas of this.overlays) {
      const r = canvas.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(r.width * dpr));
      const h = Math.max(1, Math.round(r.height * dpr));
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      const ctx = /** @type {CanvasRenderingContext2D} */ (canvas.getContext("2d"));
      ctx.clearRect(0, 0, w, h);
      const s = st.session;
      if (!s || !r.width) continue;
      const sx = w / s.width;
      const sy = h / s.height;
      ctx.font = `${12 * dpr}px system-ui, sans-serif`;
      s.instances.forEach((inst, i) => {
        const [x0, y0, x1, y1] = inst.box;
        const off = st.exclude.includes(i);
        ctx.setLineDash(off ? [4 * dpr, 4 * dpr] : []);
        ctx.lineWidth = 2 * dpr;
        ctx.strokeStyle = off ? "rgba(160,160,160,0.9)" : "rgba(255,200,0,0.95)";
        ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
        ctx.setLineDash([]);
        const label = `${i + 1} ${inst.name || "object"}${off ? " (excluded)" : ""}`;
        ctx.fillStyle = "rgba(0,0,0,0.6)";
        const tw = ctx.measureText(label).width;
        ctx.fillRect(x0 * sx, y0 * sy, tw + 6 * dpr, 16 * dpr);
        ctx.fillStyle = "#fff";
        ctx.fillText(label, x0 * sx + 3 * dpr, y0 * sy + 12 * dpr);
      });
      for (const hint of st.hints) {
        const cx = (hint.x + 0.5) * sx;
        const cy = (hint.y + 0.5) * sy;
        const sel = hint.id === st.selected;
        const rad = (sel ? 8 : 6) * dpr;
        ctx.beginPath();
        ctx.arc(cx, cy, rad, 0, 2 * Math.PI);
        ctx.fillStyle = hintColor(hint, this.lightnessAt(hint.x, hint.y));
        ctx.fill();
        ctx.lineWidth = (sel ? 3 : 2) * dpr;
        ctx.strokeStyle = "#fff";
        ctx.stroke();
        ctx.beginPath();
        ctx.arc(cx, cy, rad + 2 * dpr, 0, 2 * Math.PI);
        ctx.lineWidth = 1 * dpr;
        ctx.strokeStyle = "#000";
        ctx.stroke();
      }
    }
  }
}
