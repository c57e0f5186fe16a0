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

function showTab(name) {
  for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("hidden", p.id !== `tab-${name}`);
}

for (const t of document.querySelectorAll(".tab")) {
  t.addEventListener("click", () => {
    showTab(t.dataset.tab);
    if (t.dataset.tab === "anomalies") loadAnomalies();
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
$("ingest-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await api("/api/ingest", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ dir: $("ingest-dir").value }) });
  } catch (err) { alert(err.message); }
  refreshJobs();
});
refreshStatus();
setInterval(() => { refreshStatus(); if (!$("tab-ingest").classList.contains("hidden")) refreshJobs(); }, 2000);
