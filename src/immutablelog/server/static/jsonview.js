// Collapsible JSON rendered with DOM nodes and textContent only: whatever an event holds
// (markup, scripts, bidi controls) is shown as text and never parsed as HTML.

const MAX_DEPTH = 64;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function scalar(value) {
  if (value === null) return el("span", "null", "null");
  if (typeof value === "string") return el("span", "string", JSON.stringify(value));
  return el("span", typeof value, String(value));
}

export function renderJSON(value, depth = 0) {
  if (value === null || typeof value !== "object") return scalar(value);
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (depth >= MAX_DEPTH) return el("pre", "string", JSON.stringify(value));
  const box = el("details");
  box.open = depth < 3;
  const label = Array.isArray(value) ? `[${entries.length} items]` : `{${entries.length} keys}`;
  box.append(el("summary", null, label));
  const list = el("ul");
  for (const [name, child] of entries) {
    const item = el("li");
    item.append(el("span", "key", Array.isArray(value) ? `${name}` : JSON.stringify(name)), ": ", renderJSON(child, depth + 1));
    list.append(item);
  }
  box.append(list);
  return box;
}

/** A payload is a string; shown as a JSON tree when it holds JSON, else as text. */
export function renderPayload(payload) {
  if (typeof payload === "string") {
    try {
      return renderJSON(JSON.parse(payload));
    } catch {
      return el("pre", "string", payload);
    }
  }
  return renderJSON(payload);
}

export { el };
