// Sweep page: a sweep event for this sweep updates its status badge and offers a reload (the page is server-rendered).
document.addEventListener("studio:sweep", (event) => {
  if (String(event.detail.id) !== document.querySelector("[data-sweep]").dataset.sweep) return;
  document.querySelector("[data-sweep-status]").textContent = event.detail.status;
  document.querySelector("[data-sweep-live]").hidden = false;
});
