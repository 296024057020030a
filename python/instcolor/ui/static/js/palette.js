// @ts-check
/** Colour choice: the a*b* gamut picker at the selected point's lightness, the suggestion
 * palette for that point, and recently used colours. */

import { gamutUrl } from "./api.js";
import { hexToRgb, rgbToHex, rgbToLab } from "./color.js";

const AB_RANGE = 110; // the gamut picture spans a*, b* in [-110, 110] (GET /editor/gamut.png)
const N = 128;
// picture column i is a* = -AB_RANGE + i * STEP, row j is b* = AB_RANGE - j * STEP
const STEP = (2 * AB_RANGE) / (N - 1);

export class GamutPicker {
  /** @param {HTMLCanvasElement} canvas @param {(rgb: string) => void} onPick */
  constructor(canvas, onPick) {
    this.canvas = canvas;
    this.onPick = onPick;
    this.L = 50;
    this.cursor = [0, 0];
    this.picture = document.createElement("canvas");
    this.picture.width = this.picture.height = N;
    this.ctx = /** @type {CanvasRenderingContext2D} */ (this.picture.getContext("2d", { willReadFrequently: true }));
    this.loaded = -1;
    canvas.addEventListener("pointerdown", (e) => {
      const r = canvas.getBoundingClientRect();
      const i = Math.floor(((e.clientX - r.left) / r.width) * N);
      const j = Math.floor(((e.clientY - r.top) / r.height) * N);
      this.cursor = [clamp(-AB_RANGE + i * STEP), clamp(AB_RANGE - j * STEP)];
      this.pick();
    });
    canvas.addEventListener("keydown", (e) => {
      const step = e.shiftKey ? 10 : 2;
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
      if (e.key in moves) {
        e.preventDefault();
        const [da, db] = moves[e.key];
        this.cursor = [clamp(this.cursor[0] + da), clamp(this.cursor[1] + db)];
        this.draw();
      } else if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        this.pick();
      }
    });
  }

  /** Show the plane at lightness L with the cursor on ``rgb`` (a hint's colour). */
  async show(L, rgb) {
    this.L = Math.max(0, Math.min(100, L));
    if (rgb) {
      const lab = rgbToLab(hexToRgb(rgb));
      this.cursor = [clamp(lab[1]), clamp(lab[2])];
    }
    const key = Math.round(this.L * 10);
    if (key !== this.loaded) {
      const img = new Image();
      img.src = gamutUrl(this.L, N);
      await img.decode();
      this.ctx.clearRect(0, 0, N, N);
      this.ctx.drawImage(img, 0, 0);
      this.loaded = key;
    }
    this.canvas.setAttribute("aria-label",
      `Colour picker at lightness ${this.L.toFixed(0)}: arrow keys move, Enter applies`);
    this.draw();
  }

  /** The displayable colour under the cursor, or null. */
  colorAt(a, b) {
    const i = Math.round((a + AB_RANGE) / STEP);
    const j = Math.round((AB_RANGE - b) / STEP);
    if (i < 0 || j < 0 || i >= N || j >= N) return null;
    const px = this.ctx.getImageData(i, j, 1, 1).data;
    return px[3] ? rgbToHex([px[0], px[1], px[2]]) : null;
  }

  pick() {
    this.draw();
    const rgb = this.colorAt(this.cursor[0], this.cursor[1]);
    if (rgb) this.onPick(rgb);
  }

  draw() {
    const c = this.canvas;
    const ctx = /** @type {CanvasRenderingContext2D} */ (c.getContext("2d"));
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.picture, 0, 0, c.width, c.height);
    const x = ((Math.round((this.cursor[0] + AB_RANGE) / STEP) + 0.5) / N) * c.width;
    const y = ((Math.round((AB_RANGE - this.cursor[1]) / STEP) + 0.5) / N) * c.height;
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.stroke();
  }
}

function clamp(v) { return Math.max(-AB_RANGE, Math.min(AB_RANGE, v)); }

/** Fill ``list`` with swatch buttons. @param {HTMLElement} list @param {{rgb: string, p?: number}[]} colors
 * @param {(rgb: string) => void} onPick */
export function swatches(list, colors, onPick, what) {
  list.replaceChildren(...colors.map((c, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "swatch";
    b.style.background = c.rgb;
    const p = c.p === undefined ? "" : ` (${Math.round(c.p * 100)} %)`;
    b.title = `${c.rgb}${p}`;
    b.setAttribute("aria-label", `${what} ${i + 1}: ${c.rgb}${p}`);
    b.dataset.rgb = c.rgb;
    b.addEventListener("click", () => onPick(c.rgb));
    return b;
  }));
}
