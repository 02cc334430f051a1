// mlops-ci catalog: the pages read without this script; it only filters, sorts and answers
// "what served on date X". Everything it reads is already escaped text in the page.
"use strict";
(function () {
  var form = document.getElementById("filters");
  var table = document.getElementById("models");
  if (form && table) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var shown = document.getElementById("shown");
    var f = form.elements;
    form.hidden = false;
    // Each row's facts are read from its data attributes once, at the first filter, not while
    // the page loads; a keystroke then only compares strings and touches the rows whose
    // visibility changes (no reads of layout, so no forced reflow).
    var facts = null;
    var readFacts = function () {
      return rows.map(function (r) {
        return {
          row: r, name: r.getAttribute("data-name"), owners: r.getAttribute("data-owners").split(" "),
          risk: r.getAttribute("data-risk"), state: r.getAttribute("data-state")
        };
      });
    };
    var apply = function () {
      facts = facts || readFacts();
      var text = f.q.value.trim().toLowerCase();
      var owner = f.owner.value, risk = f.risk.value, state = f.state.value;
      var n = 0;
      for (var i = 0; i < facts.length; i++) {
        var x = facts[i];
        var ok = (!text || x.name.indexOf(text) !== -1) &&
          (!owner || x.owners.indexOf(owner) !== -1) &&
          (!risk || x.risk === risk) && (!state || x.state === state);
        if (x.row.hidden === ok) x.row.hidden = !ok;
        if (ok) n++;
      }
      shown.textContent = n + " of " + facts.length + " models shown";
    };
    form.addEventListener("input", apply);
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    var heads = table.tHead.rows[0].cells;
    var sortBy = function (index) {
      var th = heads[index];
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      var keyed = rows.map(function (r) {
        var c = r.cells[index];
        var v = c.hasAttribute("data-v") ? c.getAttribute("data-v") : c.textContent.trim().toLowerCase();
        var x = v === "" ? NaN : Number(v);
        return { r: r, v: v, x: x };
      });
      keyed.sort(function (a, b) {
        var an = !isNaN(a.x), bn = !isNaN(b.x);
        if (an && bn) return (a.x - b.x) * dir;
        if (a.v === "" || a.v === "–") return 1;   // empty cells last in both directions
        if (b.v === "" || b.v === "–") return -1;
        return a.v < b.v ? -dir : a.v > b.v ? dir : 0;
      });
      rows = keyed.map(function (k) { return k.r; });
      body.append.apply(body, rows);
      for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    };
    Array.prototype.forEach.call(heads, function (th, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      button.title = "Sort by " + th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(index); });
    });
    // Every row shows at first: the count needs no pass over the rows.
    shown.textContent = rows.length + " of " + rows.length + " models shown";
  }

  var served = document.getElementById("served-at");
  if (served) {
    served.hidden = false;
    var answer = document.getElementById("served-answer");
    var intervals = Array.prototype.slice.call(document.querySelectorAll("table.served tbody tr"));
    served.addEventListener("submit", function (e) { e.preventDefault(); });
    served.addEventListener("input", function () {
      var day = served.elements.day.value;
      var from = Date.parse(day + "T00:00:00Z"), to = from + 86400000;
      var names = [];
      intervals.forEach(function (tr) {
        var start = Date.parse(tr.dataset.start);
        var end = tr.dataset.end ? Date.parse(tr.dataset.end) : Infinity;
        var hit = !isNaN(from) && start < to && end > from;
        tr.classList.toggle("hit", hit);
        if (hit) names.push(tr.cells[0].textContent);
      });
      answer.textContent = isNaN(from) ? "" : names.length ? "On " + day + ": " + names.join(", then ") : "Nothing served on " + day + ".";
    });
  }
})();
