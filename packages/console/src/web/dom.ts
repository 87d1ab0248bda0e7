/** The console page's small DOM toolkit: elements, tables, badges, meters, sizes, times, toasts. */

export type Child = Node | string | null | undefined | false;

export function h(
  tag: string,
  attrs: Record<string, string | number | boolean> = {},
  ...kids: Child[]
) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids) if (k !== null && k !== undefined && k !== false) el.append(k);
  return el;
}

export function table(headers: string[], rows: HTMLElement[], empty: string): HTMLElement {
  if (rows.length === 0) return h('div', { class: 'empty' }, empty);
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, ...headers.map((x) => h('th', {}, x)))),
    h('tbody', {}, ...rows),
  );
}

/** A bar filled to `pct` percent (set through the CSSOM: the page's CSP forbids style attributes). */
export function meter(pct: number, title?: string): HTMLElement {
  const fill = h('span');
  fill.style.width = `${Math.max(0, Math.min(100, pct)).toFixed(1)}%`;
  return h('span', { class: 'meter', ...(title ? { title } : {}) }, fill);
}

export function badge(text: string, kind = text): HTMLElement {
  return h('span', { class: `badge ${kind}` }, text);
}

export function bytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${u[i]}`;
}

export function ago(iso: string): string {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 2) return 'just now';
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

export function fill(id: string, content: Node): void {
  const body = document.querySelector(`#${id} .body`);
  if (body) body.replaceChildren(content);
}

export function toast(text: string, bad = false): void {
  const t = h('div', { class: `toast${bad ? ' bad' : ''}`, role: 'status' }, text);
  document.getElementById('toasts')?.append(t);
  setTimeout(() => t.remove(), 6000);
}
