// The events-over-time chart: stacked bars per event type, drawn as SVG elements (never
// markup), from GET /v1/event-counts for the current filters. Clicking a bar narrows the
// time range to it.

const SVG = "http://www.w3.org/2000/svg";
const TYPES = ["success", "info", "warning", "error"];
const WIDTH = 1000;
const HEIGHT = 120;

function node(tag, attributes = {}) {
  const created = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) created.setAttribute(name, String(value));
  return created;
}

/** Draws ``buckets`` into ``svg``; ``onPick(bucket)`` is called when a bar is chosen. */
export function drawChart(svg, buckets, onPick) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (!buckets.length) return;
  const t0 = Date.parse(buckets[0].start);
  const t1 = Date.parse(buckets[buckets.length - 1].end);
  const span = Math.max(t1 - t0, 1);
  const peak = Math.max(...buckets.map((b) => b.total), 1);
  for (const bucket of buckets) {
    const start = Date.parse(bucket.start);
    const x = ((start - t0) / span) * WIDTH;
    const width = Math.max(((Date.parse(bucket.end) - start) / span) * WIDTH - 1, 1);
    const group = node("g", { class: "bar", tabindex: 0, role: "button" });
    const label = TYPES.map((t) => `${t} ${bucket.counts[t] ?? 0}`).join(", ");
    const title = node("title");
    title.textContent = `${bucket.start} – ${bucket.end}: ${label}`;
    group.append(title);
    group.setAttribute("aria-label", title.textContent);
    let y = HEIGHT;
    for (const type of TYPES) {
      const count = bucket.counts[type] ?? 0;
      if (!count) continue;
      const height = (count / peak) * (HEIGHT - 4);
      y -= height;
      group.append(node("rect", { x, y, width, height, class: `bar-${type}` }));
    }
    group.append(node("rect", { x, y: 0, width, height: HEIGHT, class: "bar-hit" }));
    group.addEventListener("click", () => onPick(bucket));
    group.addEventListener("keydown", (event) => {
      if (event.key === "Enter") onPick(bucket);
    });
    svg.append(group);
  }
}
