/* evalkit leaderboard: sortable and filterable tables, no dependencies.
   A table with class "sortable" sorts on a header click (numbers numerically when the header has
   data-type="num"; empty cells always last; the first click sorts ascending, except under a header with
   data-better="higher", where it puts the best row first). An <input class="filter" data-table="ID"> hides the
   rows of table ID whose text does not contain what was typed, and updates [data-count-for=ID]. */
(function () {
  "use strict";

  function cellKey(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "") { return null; }
    if (numeric) {
      var num = parseFloat(raw);
      return isNaN(num) ? null : num;
    }
    return raw.toLowerCase();
  }

  function sortTable(table, index, header) {
    // a metric column's first click puts the best row first (data-better: the judge's declaration)
    var current = header.getAttribute("aria-sort");
    var ascending = current ? current !== "ascending" : header.getAttribute("data-better") !== "higher";
    var numeric = header.getAttribute("data-type") === "num";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a.cells[index], numeric);
      var y = cellKey(b.cells[index], numeric);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function updateCount(table) {
    var counter = document.querySelector('[data-count-for="' + table.id + '"]');
    if (!counter) { return; }
    var rows = table.tBodies[0].rows;
    var shown = Array.prototype.filter.call(rows, function (row) { return !row.hidden; }).length;
    counter.textContent = shown + " of " + rows.length + " rows";
  }

  function filterTable(table, query) {
    var needle = query.trim().toLowerCase();
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) === -1;
    });
    updateCount(table);
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, index) {
      header.tabIndex = 0;
      header.addEventListener("click", function () { sortTable(table, index, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, index, header); }
      });
    });
    updateCount(table);
  });
  document.querySelectorAll("input.filter").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    if (table) { input.addEventListener("input", function () { filterTable(table, input.value); }); }
  });
})();
