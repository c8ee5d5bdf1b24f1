// Model detail page: confirm before deleting, draw the loss chart, follow live status changes.
(function () {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  const source = document.getElementById("loss-history");
  const canvas = document.getElementById("loss-chart");
  if (source && canvas && window.Chart) {
    const points = JSON.parse(source.textContent);
    const datasets = [{
      label: "loss", data: points.map((p) => ({ x: p.step, y: p.loss })),
      borderColor: "#4f46e5", pointRadius: 0, borderWidth: 2, tension: 0.1,
    }];
    const evalPoints = points.filter((p) => typeof p.eval_loss === "number");
    if (evalPoints.length) {
      datasets.push({
        label: "eval loss", data: evalPoints.map((p) => ({ x: p.step, y: p.eval_loss })),
        borderColor: "#b45309", pointRadius: 2, borderWidth: 2,
      });
    }
    new window.Chart(canvas, {
      type: "line",
      data: { datasets },
      options: {
        animation: false, parsing: false, normalized: true, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" } }, y: { title: { display: true, text: "loss" } } },
        plugins: { legend: { display: datasets.length > 1 } },
      },
    });
  }

  const badge = document.querySelector("[data-model-status]");
  const id = Number(window.location.pathname.split("/").filter(Boolean)[1]);
  document.addEventListener("studio:model", (event) => {
    const data = event.detail || {};
    if (data.id !== id) return;
    if (data.action === "deleted") { window.location.assign("/models/"); return; }
    if (badge && data.status) { badge.textContent = data.status; badge.className = "badge " + data.status; }
    // A finished deploy changes several cards (name, digest, lineage, the form): the server renders them again.
    const deployBadge = document.querySelector("[data-deploy-status]");
    if (data.action === "deploy" && deployBadge && data.deploy_status && data.deploy_status !== deployBadge.textContent) {
      window.location.reload();
      return;
    }
    // The live deployment's own mark (a parity verdict, or Ollama no longer serving it) can change alone.
    const liveBadge = document.querySelector("[data-live-status]");
    if (data.action === "deploy" && data.ollama_name) {
      const live = data.deploy_drifted ? "drifted" : data.ollama_still_served === false ? "not served" : "live";
      if (!liveBadge || liveBadge.textContent !== live) window.location.reload();
    }
  });
})();
