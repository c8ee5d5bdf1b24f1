// Evaluation pages: live progress from "studio:evaluation" events (static/js/live.js), a browser
// notification when an evaluation finishes (if the user allowed it), and the examples filters.
(function () {
  "use strict";
  const FINISHED = ["completed", "failed", "cancelled"];

  function updateRow(root, data) {
    const badge = root.querySelector("[data-status]");
    if (badge) { badge.textContent = data.status; badge.className = "badge " + data.status; }
    const progress = data.progress || {};
    const percent = progress.total ? Math.floor((100 * (progress.done || 0)) / progress.total) : 0;
    const bar = root.querySelector("[data-progress]");
    if (bar) {
      bar.setAttribute("aria-valuenow", String(percent));
      const fill = bar.querySelector("span");
      if (fill) fill.style.width = percent + "%";
      if (FINISHED.includes(data.status) && !root.matches("#evaluation-state")) bar.hidden = true;
    }
    const text = root.querySelector("[data-progress-text]");
    if (text) text.textContent = (progress.done || 0) + " / " + (progress.total || "?") + " answers";
    const error = root.querySelector("[data-error]");
    if (error && data.error_message) { error.textContent = data.error_message; error.hidden = false; }
  }

  function notify(data) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const title = "Evaluation #" + data.id + " " + data.status;
    const body = data.summary || data.error_message || "";
    const note = new Notification(title, { body: body, tag: "evaluation-" + data.id });
    note.onclick = () => { window.focus(); window.location.href = data.url; };
  }

  const detail = document.getElementById("evaluation-state");
  const notifyButton = document.querySelector("[data-notify-button]");
  if (notifyButton && "Notification" in window && Notification.permission === "default"
      && detail && !FINISHED.includes(detail.dataset.status)) {
    // Browsers only grant the permission from a click: ask through a button, never on load.
    notifyButton.hidden = false;
    notifyButton.addEventListener("click", () => {
      Notification.requestPermission().then(() => { notifyButton.hidden = true; });
    });
  }

  document.addEventListener("studio:evaluation", (event) => {
    const data = event.detail || {};
    if (!data.id) return;
    document.querySelectorAll('[data-evaluation-id="' + data.id + '"]').forEach((root) => updateRow(root, data));
    if (FINISHED.includes(data.status)) {
      notify(data);
      if (detail && String(data.id) === detail.dataset.evaluationId && detail.dataset.status !== data.status) {
        detail.dataset.status = data.status;
        // The results (cards, matrices, examples) are rendered on the server: load them once.
        window.setTimeout(() => window.location.reload(), 300);
      }
    }
  });

  const filters = document.querySelector("[data-example-filters]");
  if (filters) {
    filters.addEventListener("click", (event) => {
      const button = event.target.closest("[data-filter]");
      if (!button) return;
      const wanted = button.dataset.filter;
      filters.querySelectorAll("[data-filter]").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      document.querySelectorAll("tr[data-outcome]").forEach((row) => {
        row.hidden = wanted !== "all" && row.dataset.outcome !== wanted;
      });
    });
  }
})();
