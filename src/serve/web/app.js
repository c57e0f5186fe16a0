// imgsearch web page: plain JavaScript over the JSON API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function card(image, lines) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.id = image.id;
  const img = document.createElement("img");
  img.src = `/api/images/${image.id}/thumbnail`;
  img.alt = image.path;
  img.title = image.path;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = lines.filter((l) => l !== null && l !== undefined && l !== "").join(" · ");
  div.append(img, meta);
  div.addEventListener("click", () => searchById(image.id));
  return div;
}

function settings() {
  const s = { k: Number($("k").value) || 12 };
  const label = $("label").value.trim();
  if (label) s.label = label;
  return s;
}

function showQuery(src, text) {
  const q = $("query");
  q.replaceChildren();
  const img = document.createElement("img");
  img.src = src;
  const span = document.createElement("span");
  span.textContent = text;
  q.append(img, span);
}

function showHits(result) {
  $("error").textContent = "";
  const grid = $("results");
  grid.replaceChildren(...result.hits.map((h) =>
    card(h, [`#${h.rank}`, `d ${h.distance.toFixed(3)}`, h.label])));
  grid.dataset.method = result.method;
}

function showPrediction(result) {
  const p = result.prediction;
  $("prediction").textContent = p.label === null
    ? "no labelled neighbours to vote"
    : `predicted label: ${p.label} (${Math.round(p.confidence * 100)}% of ${p.voters.length} neighbours)`;
}

function fail(error) {
  $("error").textContent = error.message;
}

async function searchFile(file) {
  showQuery(URL.createObjectURL(file), file.name);
  const form = () => {
    const f = new FormData();
    f.append("image", file, file.name);
    for (const [k, v] of Object.entries(settings())) f.append(k, String(v));
    return f;
  };
  try {
    showHits(await api("/api/query", { method: "POST", body: form() }));
    // The vote uses the server's default k; filters do not apply to it.
    const f = form();
    f.delete("label");
    f.delete("k");
    showPrediction(await api("/api/classify", { method: "POST", body: f }).catch((e) => ({ prediction: { label: null, voters: [] }, error: e })));
  } catch (e) { fail(e); }
}

async function searchById(id) {
  showTab("search");
  showQuery(`/api/images/${id}/thumbnail`, `image ${id}`);
  const json = (body) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  try {
    showHits(await api("/api/query", json({ id, ...settings() })));
    showPrediction(await api("/api/classify", json({ id })).catch(() => ({ prediction: { label: null, voters: [] } })));
  } catch (e) { fail(e); }
}

async function loadAnomalies() {
  try {
    const r = await api("/api/anomalies?top=48");
    $("anomalies").replaceChildren(...r.images.map((a) =>
      card(a, [`score ${a.score.toFixed(4)}`, `${a.percentile.toFixed(1)}%`, a.label])));
  } catch (e) { $("anomalies").textContent = e.message; }
}

async function loadDuplicates() {
  $("duplicates").textContent = "searching…";
  try {
    const r = await api("/api/duplicates");
    if (r.groups.length === 0) { $("duplicates").textContent = "no duplicates found"; return; }
    $("duplicates").replaceChildren(...r.groups.map((g) => {
      const div = document.createElement("div");
      div.className = "group";
      const title = document.createElement("div");
      title.textContent = `${g.kind}: ${g.members.length} images (max distance ${g.max_distance.toFixed(3)})`;
      const grid = document.createElement("div");
      grid.className = "grid";
      grid.append(...g.members.map((m) => card(m, [m.path.split("/").pop()])));
      div.append(title, grid);
      return div;
    }));
  } catch (e) { $("duplicates").textContent = e.message; }
}

async function refreshStatus() {
  try {
    const r = await api("/api/status");
    const s = r.status;
    const running = r.jobs.running + r.jobs.queued;
    $("status").textContent = `${s.images} images · model ${s.model.name} · ${Object.keys(s.labels).length} labels` +
      (running ? ` · ingesting (${running} job${running > 1 ? "s" : ""})` : "");
  } catch (e) { $("status").textContent = `status unavailable: ${e.message}`; }
}

async function refreshJobs() {
  try {
    const r = await api("/api/jobs");
    $("jobs").replaceChildren(...r.jobs.slice().reverse().map((j) => {
      const div = document.createElement("div");
      div.className = "job";
      const bar = document.createElement("progress");
      bar.max = j.total || 1;
      bar.value = j.scanned;
      const text = document.createElement("span");
      const added = j.report ? ` · added ${j.report.added}, failed ${j.report.failed}` : "";
      text.textContent = ` job ${j.id} ${j.state} ${j.scanned}/${j.total ?? "?"} ${j.dir}${added}${j.error ? " · " + j.error : ""}`;
      div.append(bar, text);
      return div;
    }));
  } catch (e) { $("jobs").textContent = e.message; }
}

// The map: points from /api/map drawn on a canvas, with pan and zoom.
// Far out each image is a dot in its label's colour; zoomed in, the
// visible images are drawn as thumbnails. Hover names the image; a click
// (not a drag) searches from it.
const map = { points: [], colours: {}, scale: 1, ox: 0, oy: 0, thumbs: new Map(), hover: null };

function mapScreen(p) {
  return [p.x * map.scale + map.ox, -p.y * map.scale + map.oy];
}

function mapNearest(sx, sy, within) {
  let best = null, bestD = within * within;
  for (const p of map.points) {
    const [x, y] = mapScreen(p);
    const d = (x - sx) ** 2 + (y - sy) ** 2;
    if (d <= bestD) { best = p; bestD = d; }
  }
  return best;
}

function mapThumb(p) {
  let img = map.thumbs.get(p.id);
  if (!img) {
    img = new Image();
    img.onload = () => requestAnimationFrame(drawMap);
    img.src = `/api/images/${p.id}/thumbnail`;
    map.thumbs.set(p.id, img);
  }
  return img;
}

function drawMap() {
  const canvas = $("map-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const visible = map.points.filter((p) => {
    const [x, y] = mapScreen(p);
    return x > -40 && y > -40 && x < canvas.width + 40 && y < canvas.height + 40;
  });
  // Thumbnails once few enough images are in view for each to have room.
  const side = Math.min(64, Math.sqrt((canvas.width * canvas.height) / Math.max(1, visible.length)) * 0.6);
  const thumbs = visible.length <= 400 && side >= 20;
  for (const p of visible) {
    const [x, y] = mapScreen(p);
    ctx.fillStyle = map.colours[p.label] || "#48c";
    if (thumbs) {
      ctx.fillRect(x - side / 2 - 2, y - side / 2 - 2, side + 4, side + 4);
      const img = mapThumb(p);
      if (img.complete && img.naturalWidth) ctx.drawImage(img, x - side / 2, y - side / 2, side, side);
    } else {
      ctx.beginPath();
      ctx.arc(x, y, 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  if (map.hover) {
    const [x, y] = mapScreen(map.hover);
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.strokeRect(x - 8, y - 8, 16, 16);
  }
  canvas.dataset.drawn = String(visible.length);
  canvas.dataset.thumbnails = String(thumbs);
}

function fitMap() {
  const canvas = $("map-canvas");
  const xs = map.points.map((p) => p.x), ys = map.points.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  map.scale = 0.9 * Math.min(canvas.width / Math.max(x1 - x0, 1e-6), canvas.height / Math.max(y1 - y0, 1e-6));
  map.ox = canvas.width / 2 - map.scale * (x0 + x1) / 2;
  map.oy = canvas.height / 2 + map.scale * (y0 + y1) / 2;
}

async function loadMap() {
  const params = new URLSearchParams({ method: $("map-method").value });
  const label = $("map-label").value.trim();
  if (label) params.set("label", label);
  $("map-info").textContent = "laying out…";
  try {
    const r = await api(`/api/map?${params}`);
    map.points = r.points;
    map.colours = r.label_colours;
    map.hover = null;
    $("map-info").textContent = r.images === 0 ? "no images selected"
      : `${r.images} images (${r.points.length} shown) · ${r.method} · ${r.seconds.toFixed(2)}s`;
    $("map-legend").replaceChildren(...Object.entries(r.label_colours).map(([l, c]) => {
      const span = document.createElement("span");
      span.style.setProperty("--c", c);
      span.textContent = l;
      return span;
    }));
    if (map.points.length) fitMap();
    drawMap();
    $("map-canvas").dataset.points = String(map.points.length);
    $("map-canvas").dataset.ids = JSON.stringify(map.points.map((p) => p.id));
  } catch (e) { $("map-info").textContent = e.message; }
}

// Canvas pixels from a mouse event (the canvas may be drawn scaled).
function canvasXY(e) {
  const canvas = $("map-canvas"), box = canvas.getBoundingClientRect();
  return [(e.clientX - box.left) * canvas.width / box.width, (e.clientY - box.top) * canvas.height / box.height];
}

// Where image `id` is drawn, in CSS pixels from the canvas's top left
// (for tests and tooling).
window.imgsearchMap = {
  screenOf(id) {
    const p = map.points.find((q) => q.id === id);
    if (!p) return null;
    const canvas = $("map-canvas"), box = canvas.getBoundingClientRect();
    const [x, y] = mapScreen(p);
    return [x * box.width / canvas.width, y * box.height / canvas.height];
  },
};

{
  const canvas = $("map-canvas");
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, ox: map.ox, oy: map.oy, moved: false };
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", (e) => {
    if (drag) {
      const box = canvas.getBoundingClientRect(), k = canvas.width / box.width;
      const dx = (e.clientX - drag.x) * k, dy = (e.clientY - drag.y) * k;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      map.ox = drag.ox + dx;
      map.oy = drag.oy + dy;
      drawMap();
      return;
    }
    const [x, y] = canvasXY(e);
    const p = mapNearest(x, y, 10);
    if (p !== map.hover) {
      map.hover = p;
      $("map-info").textContent = p ? `${p.path}${p.label ? " · " + p.label : ""}` : "";
      canvas.title = p ? p.path : "";
      drawMap();
    }
  });
  window.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const clicked = !drag.moved;
    drag = null;
    canvas.classList.remove("dragging");
    if (clicked && e.target === canvas) {
      const [x, y] = canvasXY(e);
      const p = mapNearest(x, y, 10);
      if (p) searchById(p.id);
    }
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [x, y] = canvasXY(e);
    const f = Math.exp(-e.deltaY / 500);
    map.ox = x - (x - map.ox) * f;
    map.oy = y - (y - map.oy) * f;
    map.scale *= f;
    drawMap();
  }, { passive: false });
}

async function loadClusters() {
  const params = new URLSearchParams({ k: String(Number($("clusters-k").value) || 10) });
  const label = $("clusters-label").value.trim();
  if (label) params.set("label", label);
  $("clusters-info").textContent = "clustering…";
  try {
    const r = await api(`/api/clusters?${params}`);
    const quality = r.purity === undefined ? "" : ` · purity ${r.purity.toFixed(3)}, NMI ${r.nmi.toFixed(3)}`;
    $("clusters-info").textContent = `${r.k} clusters of ${r.images} images${quality}`;
    $("clusters").replaceChildren(...r.clusters.map((c) => {
      const row = document.createElement("div");
      row.className = "cluster";
      row.dataset.id = c.id;
      const head = document.createElement("div");
      head.className = "centroid";
      if (c.centroid_image) {
        const img = document.createElement("img");
        img.src = c.centroid_image;
        img.alt = `decoded centroid of cluster ${c.id}`;
        img.title = "what the decoder draws at the cluster's centre";
        head.append(img);
      }
      head.append(document.createTextNode(`cluster ${c.id} · ${c.size} images`));
      const grid = document.createElement("div");
      grid.className = "grid";
      grid.append(...c.members.map((m) => card(m, [`d ${m.distance.toFixed(3)}`, m.label])));
      row.append(head, grid);
      return row;
    }));
  } catch (e) { $("clusters-info").textContent = e.message; }
}

function showTab(name) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("hidden", p.id !== `tab-${name}`);
}

for (const t of document.querySelectorAll(".tab")) {
  t.addEventListener("click", () => {
    showTab(t.dataset.tab);
    if (t.dataset.tab === "anomalies") loadAnomalies();
    if (t.dataset.tab === "map" && map.points.length === 0) loadMap();
    if (t.dataset.tab === "clusters" && !$("clusters").hasChildNodes()) loadClusters();
    if (t.dataset.tab === "ingest") refreshJobs();
  });
}
$("file").addEventListener("change", (e) => { if (e.target.files[0]) searchFile(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) searchFile(e.dataTransfer.files[0]);
});
$("load-anomalies").addEventListener("click", loadAnomalies);
$("load-duplicates").addEventListener("click", loadDuplicates);
$("load-map").addEventListener("click", loadMap);
$("load-clusters").addEventListener("click", loadClusters);
$("ingest-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("/api/ingest", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ dir: $("ingest-dir").value }) });
  } catch (err) { alert(err.message); }
  refreshJobs();
});
refreshStatus();
setInterval(() => { refreshStatus(); if (!$("tab-ingest").classList.contains("hidden")) refreshJobs(); }, 2000);
