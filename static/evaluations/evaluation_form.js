// Create form: each model-name box offers its endpoint's models; the fine-tuned name's hint follows the model.
(function () {
  "use strict";
  const select = document.getElementById("id_model");
  const input = document.getElementById("id_fine_tuned_name");
  const tunedEndpoint = document.getElementById("id_fine_tuned_endpoint");
  if (!select || !input) return;
  const fill = () => {
    const option = select.options[select.selectedIndex];
    if (!option) return;
    const local = tunedEndpoint && tunedEndpoint.value === "local";
    input.placeholder = local ? "this model's own adapter on " + (option.dataset.base || "its base") : option.dataset.ollamaName || "";
  };
  document.querySelectorAll("select[data-endpoint-for]").forEach((endpoint) => {
    const box = document.getElementById(endpoint.dataset.endpointFor);
    endpoint.addEventListener("change", () => {
      if (box) box.setAttribute("list", "models-" + endpoint.value);
      fill();
    });
  });
  select.addEventListener("change", fill);
  fill();
})();
