// @ts-check
/** The editor's calls to /editor/... Errors become ApiError with the server's message. */

export class ApiError extends Error {
  /** @param {string} message @param {number} status @param {any} body */
  constructor(message, status, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
  get superseded() { return this.status === 409 && this.body && this.body.status === "superseded"; }
  get sessionGone() { return this.status === 404 || this.status === 410; }
}

/** @param {Response} r */
async function check(r) {
  if (r.ok) return r;
  let body = null;
  let message = `${r.status} ${r.statusText}`;
  try {
    body = await r.json();
    if (body && body.error) message = body.error;
  } catch (_) { /* not JSON */ }
  throw new ApiError(message, r.status, body);
}

/** @param {File} file */
function imageHeaders(file) {
  const type = file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream";
  // the file name lets the server name the file in its messages (ASCII only in a header)
  return { "Content-Type": type, "Instcolor-Filename": file.name.replace(/[^\x20-\x7e]/g, "_") };
}

/** @param {File} file @param {string | null} size processing size (null: the server's) */
export async function openImage(file, size = null) {
  const url = size ? `/editor/sessions?size=${encodeURIComponent(size)}` : "/editor/sessions";
  const r = await check(await fetch(url, { method: "POST", body: file, headers: imageHeaders(file) }));
  return r.json();
}

/** @param {string} sid */
export function greyUrl(sid) { return `/editor/sessions/${encodeURIComponent(sid)}/input.png`; }

/** @param {string} sid @param {any} body @param {AbortSignal} [signal] -> Blob */
export async function preview(sid, body, signal) {
  const r = await check(await fetch(`/editor/sessions/${encodeURIComponent(sid)}/preview`, {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" }, signal,
  }));
  return r.blob();
}

/** @param {string} sid @param {any} body -> Blob (full resolution) */
export async function result(sid, body) {
  const r = await check(await fetch(`/editor/sessions/${encodeURIComponent(sid)}/result`, {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
  }));
  return r.blob();
}

/** @param {string} sid @param {any} body -> {L, colors: [{rgb, p}]} */
export async function suggest(sid, body, signal) {
  const r = await check(await fetch(`/editor/sessions/${encodeURIComponent(sid)}/suggest`, {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" }, signal,
  }));
  return r.json();
}

/** @param {File} file -> {histogram, saturation} */
export async function reference(file) {
  const r = await check(await fetch("/editor/reference", { method: "POST", body: file, headers: imageHeaders(file) }));
  return r.json();
}

/** @param {number} L @param {number} n */
export function gamutUrl(L, n) { return `/editor/gamut.png?L=${L.toFixed(1)}&n=${n}`; }
