// The console's few live parts; every page works without them except the field picker (picker.js).
"use strict";

// Copy buttons: <button data-copy="input-id">.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const input = document.getElementById(button.dataset.copy);
  if (!input) return;
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    document.execCommand("copy"); // http:// pages other than localhost have no clipboard API
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
});

// Forms that destroy something ask first: <form data-confirm="...">.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Runs still going: the runs table is fetched again every 2 s until every run on it is over.
const POLL_MS = 2000;
function pollRuns() {
  const runs = document.getElementById("runs");
  if (!runs || !runs.dataset.live) return;
  setTimeout(async () => {
    try {
      const answer = await fetch(runs.dataset.live, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (answer.ok && answer.headers.get("content-type")?.startsWith("text/html")) {
        const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById("runs");
        if (fresh && !fresh.dataset.live) {
          window.location.reload(); // every run is over: the job's own state and next run changed too
          return;
        }
        if (fresh) runs.replaceWith(fresh);
      }
    } catch {
      // the server restarting: try again next time
    }
    pollRuns();
  }, POLL_MS);
}
pollRuns();

// A run page still going reloads itself: <dl data-reload="seconds">.
const reloading = document.querySelector("[data-reload]");
if (reloading) setTimeout(() => window.location.reload(), Number(reloading.dataset.reload) * 1000);

// The segment editor says at once whether its text is JSON (the server checks the filter's rules on submit).
const editor = document.getElementById("segment-filter");
if (editor) {
  const status = document.createElement("p");
  status.className = "hint";
  status.id = "segment-filter-status";
  status.setAttribute("aria-live", "polite");
  editor.after(status);
  const check = () => {
    try {
      JSON.parse(editor.value);
      status.textContent = "Valid JSON.";
      status.classList.remove("field-error");
    } catch (error) {
      status.textContent = `Not JSON yet: ${error.message}`;
      status.classList.add("field-error");
    }
  };
  editor.addEventListener("input", check);
  check();
}
