// Dashboard: running jobs' progress follows live "job" events; a job that starts or ends reloads
// the page's counts (cheap: one server render) so no number stays stale.
(function () {
  let reloadTimer = null;
  document.addEventListener("studio:job", (event) => {
    const job = event.detail || {};
    const block = document.querySelector('.running-job[data-job-id="' + job.id + '"]');
    const percent = (job.progress || {}).percent;
    if (block && job.status === "running" && typeof percent === "number") {
      block.querySelector("[data-job-progress]").style.width = percent + "%";
      block.querySelector("[data-job-percent]").textContent = Math.round(percent);
      return;
    }
    if (job.status && !reloadTimer) reloadTimer = setTimeout(() => window.location.reload(), 1500);
  });
})();
