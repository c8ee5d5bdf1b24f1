// Job page: live status, progress, ETA and the loss chart, from "studio:job" events of this job.
(function () {
  const summary = document.getElementById("job-summary");
  if (!summary) return;
  const jobId = Number(summary.dataset.jobId);
  const $ = (selector) => summary.querySelector(selector);
  const initial = JSON.parse(document.getElementById("metric-points").textContent || "[]");
  const canvas = document.getElementById("loss-chart");
  const emptyNote = document.querySelector("[data-chart-empty]");
  const chartBox = document.querySelector("[data-chart-box]");
  let chart = null;
  const seen = new Set();

  function ensureChart() {
    if (chart || !window.Chart || !canvas) return chart;
    chart = new window.Chart(canvas, {
      type: "line",
      data: { datasets: [
        { label: "loss", data: [], borderColor: "#4f46e5", pointRadius: 0, tension: 0.2 },
        { label: "accuracy", data: [], borderColor: "#047857", pointRadius: 0, tension: 0.2, yAxisID: "y1", hidden: true },
      ] },
      options: {
        animation: false, parsing: false, responsive: true, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" } },
                  y: { title: { display: true, text: "loss" } },
                  y1: { position: "right", min: 0, max: 1, grid: { drawOnChartArea: false }, display: "auto" } },
      },
    });
    return chart;
  }

  function addPoints(points) {
    // The chart stays hidden until it has something to draw: an empty pair of axes says nothing.
    if (!(points || []).some((point) => typeof point.step === "number" && !seen.has(point.step))) return;
    if (chartBox) chartBox.hidden = false;
    const c = ensureChart();
    if (!c) return;
    let added = false;
    for (const point of points || []) {
      if (typeof point.step !== "number" || seen.has(point.step)) continue;
      seen.add(point.step);
      if (typeof point.loss === "number") { c.data.datasets[0].data.push({ x: point.step, y: point.loss }); added = true; }
      if (typeof point.accuracy === "number") { c.data.datasets[1].data.push({ x: point.step, y: point.accuracy }); added = true; }
    }
    if (!added) return;
    for (const dataset of c.data.datasets) dataset.data.sort((a, b) => a.x - b.x);
    if (emptyNote) emptyNote.hidden = true;
    c.update("none");
  }

  // Same shapes as the server's |duration filter and the page's Y-m-d H:i:s dates.
  function duration(seconds) {
    const total = Math.max(0, Math.round(seconds));
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    if (h) return m ? h + " h " + m + " min" : h + " h";
    if (m) return s ? m + " min " + s + " s" : m + " min";
    return s + " s";
  }

  // The server sends ISO times in its own zone, the one its rendered dates use: keep its clock.
  function serverTime(iso) {
    return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/.test(iso) ? iso.slice(0, 19).replace("T", " ") : iso;
  }

  function showStatus(job) {
    const badge = $("[data-job-status]");
    if (badge && job.status) {
      badge.className = "badge " + job.status;
      badge.textContent = job.status.charAt(0).toUpperCase() + job.status.slice(1);
    }
    const progress = job.progress || {};
    const percent = job.status === "succeeded" ? 100 : progress.percent;
    if (typeof percent === "number") $("[data-job-progress]").style.width = percent + "%";
    if (typeof progress.step === "number") {
      let text = "step " + progress.step + (progress.total_steps ? " of " + progress.total_steps : "");
      if (progress.epoch !== undefined) text += " · epoch " + progress.epoch;
      $("[data-job-step]").textContent = text;
    }
    const eta = $("[data-job-eta]");
    eta.textContent = job.status === "running" && typeof progress.eta_seconds === "number"
      ? "about " + duration(progress.eta_seconds) + " left" : "";
    const started = $("[data-job-started]");
    if (job.started_at && started && started.textContent.trim() === "—") started.textContent = serverTime(job.started_at);
    if (job.error_message) { const e = $("[data-job-error]"); e.textContent = job.error_message; e.hidden = false; }
    if (job.exit_code !== undefined && job.exit_code !== null) $("[data-job-exit]").textContent = job.exit_code;
    if (job.finished_at) {
      // The cancel button and the model link change with the status: reload once to show them.
      window.setTimeout(() => window.location.reload(), 1500);
    }
  }

  window.addEventListener("load", () => addPoints(initial));
  document.addEventListener("studio:job", (event) => {
    const job = event.detail || {};
    if (job.id !== jobId) return;
    showStatus(job);
    if (job.points) addPoints(job.points);
  });
  document.addEventListener("studio:model", (event) => {
    if ((event.detail || {}).job_id === jobId) window.location.reload();
  });
})();
