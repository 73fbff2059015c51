// The field picker of the job form: search the exportable fields (as GET /v1/exportable-fields lists them for the
// chosen scope), add them as rows of fields[], reorder by removing and adding. Keyboard: from the search box the
// down arrow enters the results, up/down/Home/End move through them, Enter or Space adds one and moves to its
// inputs, Escape returns to the search box.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("picker-data").textContent);
  const form = document.getElementById("job-form");
  const search = document.getElementById("field-search");
  const results = document.getElementById("field-results");
  const count = document.getElementById("field-count");
  const chosen = document.getElementById("chosen-fields");
  const template = document.getElementById("field-row-template");
  const scope = document.getElementById("scope");
  const frequency = document.getElementById("frequency-value");
  const dateRange = document.getElementById("date-range");

  const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const fieldsOfScope = () => data.fields[scope.value] || [];

  function matches(field, words) {
    const text = [field.name, field.description, ...(field.aliases || [])].join(" ").toLowerCase();
    return words.every((word) => text.includes(word));
  }

  function renderResults() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = fieldsOfScope().filter((field) => matches(field, words));
    results.innerHTML = shown.map((field, i) => {
      const aliases = field.aliases && field.aliases.length ? ` · also ${field.aliases.map(escape).join(", ")}` : "";
      const needs = field.parameters && field.parameters.length ? ` · needs ${field.parameters.map(escape).join(", ")}` : "";
      return `<li><button type="button" class="pick" data-name="${escape(field.name)}" aria-describedby="pick-${i}">`
        + `<code>${escape(field.name)}</code></button>`
        + `<p class="pick-desc" id="pick-${i}">${escape(field.description)} <span class="example">Example: ${escape(field.example)}</span>${aliases}${needs}</p></li>`;
    }).join("");
    count.textContent = `${shown.length} of ${fieldsOfScope().length} ${scope.value} fields`;
  }

  // Inputs are named by their place in the body (fields[2].aliasName): renumber after every change.
  function renumber() {
    chosen.querySelectorAll(".field-row").forEach((row, i) => {
      row.querySelectorAll("[data-part]").forEach((input) => {
        input.name = `fields[${i}].${input.dataset.part}`;
        if (input.type !== "hidden") input.id = `fields-${i}-${input.dataset.part}`;
      });
    });
  }

  function clearStaleErrors() {
    // Row errors name positions the rows no longer have.
    chosen.querySelectorAll(".field-error").forEach((node) => node.remove());
    chosen.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  }

  function addField(name) {
    const field = fieldsOfScope().find((f) => f.name === name);
    const html = template.innerHTML.replaceAll("__i__", String(chosen.children.length)).replaceAll("__name__", escape(name));
    const holder = document.createElement("ol");
    holder.innerHTML = html.trim();
    const row = holder.firstElementChild;
    const parameters = (field && field.parameters) || [];
    for (const part of ["customVarPosition", "dynamicVarKey"]) {
      if (!parameters.includes(part)) row.querySelector(`.part-${part}`)?.remove();
    }
    clearStaleErrors();
    chosen.appendChild(row);
    renumber();
    // The input the field cannot do without comes first: its custom var position or dynamic var key, else its alias.
    const wanted = [".part-customVarPosition input", ".part-dynamicVarKey input", ".part-aliasName input"];
    wanted.map((selector) => row.querySelector(selector)).find(Boolean).focus();
  }

  results.addEventListener("click", (event) => {
    const button = event.target.closest("button.pick");
    if (button) addField(button.dataset.name);
  });

  chosen.addEventListener("click", (event) => {
    const button = event.target.closest("button.remove");
    if (!button) return;
    const row = button.closest(".field-row");
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    clearStaleErrors();
    renumber();
    (next ? next.querySelector("button.remove") : search).focus();
  });

  const picks = () => Array.from(results.querySelectorAll("button.pick"));

  search.addEventListener("input", renderResults);
  search.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") {
      event.preventDefault();
      picks()[0]?.focus();
    } else if (event.key === "Enter") {
      event.preventDefault(); // Enter in the search box must not submit the job
      picks()[0]?.focus();
    }
  });
  results.addEventListener("keydown", (event) => {
    const all = picks();
    const at = all.indexOf(document.activeElement);
    if (at < 0) return;
    const moves = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 };
    if (event.key in moves) {
      event.preventDefault();
      const target = moves[event.key];
      if (target < 0) search.focus();
      else all[Math.min(target, all.length - 1)].focus();
    } else if (event.key === "Escape") {
      search.focus();
    }
  });

  function showDateRange() {
    const once = frequency.value === "once";
    dateRange.hidden = !once;
    dateRange.querySelectorAll("input").forEach((input) => { input.disabled = !once; });
  }

  scope.addEventListener("change", renderResults);
  frequency.addEventListener("change", showDateRange);
  // Enter in a row's input would submit a half-made job: it moves back to the search box instead.
  chosen.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches("input")) {
      event.preventDefault();
      search.focus();
    }
  });
  form.addEventListener("submit", renumber);
  showDateRange();
  renderResults();
})();
