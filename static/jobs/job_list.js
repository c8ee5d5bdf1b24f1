// Jobs list: status badges and progress bars follow the user's live "job" events.
(function () {
  const table = document.getElementById("job-table");
  if (!table) return;
  document.addEventListener("studio:job", (event) => {
    const job = event.detail || {};
    const row = table.querySelector('tr[data-job-id="' + job.id + '"]');
    if (!row) return;
    const badge = row.querySelector("[data-job-status]");
    if (badge && job.status) {
      badge.className = "badge " + job.status;
      badge.textContent = job.status.charAt(0).toUpperCase() + job.status.slice(1);
    }
    const bar = row.querySelector("[data-job-progress]");
    const percent = job.status === "succeeded" ? 100 : (job.progress || {}).percent;
    if (bar && typeof percent === "number") bar.style.width = percent + "%";
  });
})();
