// Makes the search and the band filter live: the page works without this file, which
// only saves the manager a press of the Show button. The server renders the results; this script
// asks for them as the manager types and swaps them in.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form.search");
  const input = document.getElementById("q");
  if (!form || !input) {
    return;
  }
  let timer = 0;
  let asked = 0;

  async function refresh() {
    const mine = ++asked;
    const url = new URL(form.action, window.location.href);
    for (const [name, value] of new FormData(form)) {
      if (value) {
        url.searchParams.set(name, value);
      }
    }
    const shown = new URL(url);
    url.searchParams.set("fragment", "results");
    const answer = await fetch(url, { credentials: "same-origin" });
    if (!answer.ok || mine !== asked) {
      return;
    }
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.getElementById("results");
    const current = document.getElementById("results");
    if (fresh && current) {
      current.replaceWith(fresh);
      window.history.replaceState(null, "", shown);
    }
  }

  const band = document.getElementById("band-filter");
  if (band) {
    band.addEventListener("change", () => form.submit());
  }
  input.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      refresh().catch(() => form.submit());
    }, 200);
  });
});
