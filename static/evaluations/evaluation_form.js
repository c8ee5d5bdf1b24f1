// Create form: the fine-tuned name follows the selected model unless the user typed one.
(function () {
  "use strict";
  const select = document.getElementById("id_model");
  const input = document.getElementById("id_fine_tuned_name");
  if (!select || !input) return;
  let typed = input.value !== "";
  input.addEventListener("input", () => { typed = input.value !== ""; });
  const fill = () => {
    const option = select.options[select.selectedIndex];
    input.placeholder = option ? option.dataset.ollamaName || "" : "";
    if (!typed) input.value = "";
  };
  select.addEventListener("change", fill);
  fill();
})();
