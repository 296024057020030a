// @ts-check
/** Hint sets as files: the format of the API's ``hints`` option and of ``instcolor video --hints``
 * ({"hints": [{x, y, rgb | ab, size}]}), plus {"global": {histogram, saturation}} when set. No DOM. */

import { Store } from "./store.js";

/** @param {any} state -> the file's object */
export function toHintSet(state) {
  const out = { hints: state.hints.map(Store.apiHint) };
  const g = {};
  if (state.global.histogram) g.histogram = state.global.histogram;
  if (state.global.saturation !== null) g.saturation = state.global.saturation;
  if (Object.keys(g).length) out.global = g;
  return out;
}

const HEX = /^#?([0-9a-fA-F]{6})$/;

/** Parse a hint-set file's text -> {hints, global}; throws Error naming the entry at fault.
 * @param {string} text @param {{width: number, height: number}} image @param {() => number} newId */
export function fromHintSet(text, image, newId) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`not valid JSON (${e instanceof Error ? e.message : e})`);
  }
  if (Array.isArray(data)) data = { hints: data };
  if (!data || typeof data !== "object") throw new Error("expected {\"hints\": [...]} or a list of hints");
  const unknown = Object.keys(data).filter((k) => k !== "hints" && k !== "global");
  if (unknown.length) throw new Error(`unknown key '${unknown[0]}' (a hint set has 'hints' and 'global')`);
  const list = data.hints || [];
  if (!Array.isArray(list)) throw new Error("'hints' must be a list");
  const hints = list.map((h, i) => {
    const where = `hint ${i}`;
    if (!h || typeof h !== "object") throw new Error(`${where}: expected an object {x, y, rgb, size}`);
    const extra = Object.keys(h).filter((k) => !["x", "y", "rgb", "ab", "size"].includes(k));
    if (extra.length) throw new Error(`${where}: unknown key '${extra[0]}'`);
    for (const k of ["x", "y"]) {
      if (typeof h[k] !== "number" || !Number.isFinite(h[k])) throw new Error(`${where}: '${k}' must be a number`);
    }
    if (h.x < 0 || h.y < 0 || h.x >= image.width || h.y >= image.height) {
      throw new Error(`${where}: (${h.x}, ${h.y}) lies outside the ${image.width}x${image.height} image`);
    }
    const size = h.size === undefined ? 1 : h.size;
    if (!Number.isInteger(size) || size < 1 || size > 64) throw new Error(`${where}: size must be 1..64`);
    const out = { id: newId(), x: h.x, y: h.y, size };
    if (typeof h.rgb === "string" && HEX.test(h.rgb)) {
      out.rgb = "#" + HEX.exec(h.rgb)[1].toLowerCase();
    } else if (Array.isArray(h.ab) && h.ab.length === 2 && h.ab.every((v) => typeof v === "number")) {
      out.ab = [h.ab[0], h.ab[1]];
    } else {
      throw new Error(`${where}: give 'rgb' as "#rrggbb" or 'ab' as [a, b]`);
    }
    return out;
  });
  let global = null;
  if (data.global !== undefined && data.global !== null) {
    const g = data.global;
    if (typeof g !== "object") throw new Error("'global' must be an object {histogram, saturation}");
    const bad = Object.keys(g).filter((k) => k !== "histogram" && k !== "saturation");
    if (bad.length) throw new Error(`global: unknown key '${bad[0]}'`);
    if (g.histogram !== undefined && !(Array.isArray(g.histogram) && g.histogram.length === 529)) {
      throw new Error("global: histogram must be a list of 529 numbers");
    }
    if (g.saturation !== undefined && !(typeof g.saturation === "number" && g.saturation >= 0 && g.saturation <= 1)) {
      throw new Error("global: saturation must be a number in [0, 1]");
    }
    global = {
      histogram: g.histogram || null,
      saturation: g.saturation === undefined ? null : g.saturation,
      reference: g.histogram ? "from the hint file" : null,
    };
  }
  return { hints, global };
}
