// @ts-check
/** sRGB <-> CIE Lab (D65), the conversion instcolor uses (instcolor/color.py). No DOM. */

const WHITE = [0.95047, 1.0, 1.08883];

/** @param {string} hex "#rrggbb" -> [r, g, b] 0..255 */
export function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

/** @param {number[]} rgb 0..255 -> "#rrggbb" */
export function rgbToHex(rgb) {
  return "#" + rgb.map((c) => Math.max(0, Math.min(255, Math.round(c))).toString(16).padStart(2, "0")).join("");
}

/** @param {number[]} rgb 0..255 -> [L, a, b] */
export function rgbToLab(rgb) {
  const lin = rgb.map((c) => {
    const v = c / 255;
    return v > 0.04045 ? ((v + 0.055) / 1.055) ** 2.4 : v / 12.92;
  });
  const [r, g, b] = lin;
  const xyz = [
    (0.412453 * r + 0.357580 * g + 0.180423 * b) / WHITE[0],
    (0.212671 * r + 0.715160 * g + 0.072169 * b) / WHITE[1],
    (0.019334 * r + 0.119193 * g + 0.950227 * b) / WHITE[2],
  ];
  const f = xyz.map((t) => (t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116));
  return [116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])];
}

/** @param {number[]} lab [L, a, b] -> [r, g, b] 0..255 (clipped) */
export function labToRgb(lab) {
  const [L, a, b] = lab;
  const fy = (L + 16) / 116;
  const f = [a / 500 + fy, fy, Math.max(0, fy - b / 200)];
  const xyz = f.map((t, i) => (t > 0.2068966 ? t ** 3 : (t - 16 / 116) / 7.787) * WHITE[i]);
  const [x, y, z] = xyz;
  const lin = [
    3.24048134 * x - 1.53715152 * y - 0.49853633 * z,
    -0.96925495 * x + 1.87599 * y + 0.04155593 * z,
    0.05564664 * x - 0.20404134 * y + 1.05731107 * z,
  ].map((v) => Math.max(0, v));
  return lin.map((v) => 255 * Math.min(1, v > 0.0031308 ? 1.055 * v ** (1 / 2.4) - 0.055 : 12.92 * v));
}

/** The display colour of a hint: its rgb, or its ab at lightness L. */
export function hintColor(hint, L = 60) {
  if (hint.rgb) return hint.rgb;
  return rgbToHex(labToRgb([L, hint.ab[0], hint.ab[1]]));
}
