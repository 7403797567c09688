// Live progress without reloading: poll the JSON twin of the page, update the counters, and
// reload once the state changes. Without JavaScript the page refreshes itself instead.
(function () {
  document.querySelectorAll("[data-poll]").forEach(function (el) {
    var url = el.getAttribute("data-poll");
    var key = el.getAttribute("data-key");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (j) {
            Object.keys(j.fields || {}).forEach(function (k) {
              var t = el.querySelector('[data-field="' + k + '"]');
              if (t) t.textContent = j.fields[k];
            });
            var bar = el.querySelector("progress");
            if (bar && j.max) { bar.max = j.max; bar.value = j.value; }
            if (j.key !== key) { location.reload(); return; }
          }
          setTimeout(tick, 500);
        })
        .catch(function () { setTimeout(tick, 1500); });
    }
    setTimeout(tick, 500);
  });
})();
