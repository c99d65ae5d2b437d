// Programme page: drag an item within its session to change the order it plays in.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const status = document.getElementById("order-status");
  let dragged = null;
  document.querySelectorAll("ol.order").forEach((list) => {
    list.addEventListener("dragstart", (e) => {
      dragged = e.target.closest("li"); if (!dragged) return;
      dragged.classList.add("dragging"); e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", dragged.dataset.item);
    });
    list.addEventListener("dragover", (e) => {
      if (!dragged || dragged.parentElement !== list) return;
      e.preventDefault();
      const over = e.target.closest("li");
      if (!over || over === dragged) return;
      const r = over.getBoundingClientRect();
      list.insertBefore(dragged, e.clientY < r.top + r.height / 2 ? over : over.nextSibling);
    });
    list.addEventListener("drop", (e) => { e.preventDefault(); });
    list.addEventListener("dragend", () => {
      if (!dragged) return;
      dragged.classList.remove("dragging"); dragged = null;
      const changes = [];
      list.querySelectorAll("li").forEach((li, i) => {
        if (Number(li.dataset.order) !== i) changes.push([li.dataset.item, i]);
      });
      if (!changes.length) return;
      Promise.all(changes.map(([id, order]) => fetch("/api/v1/programme/items/" + id, {
        method: "PATCH", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": meta.content },
        body: JSON.stringify({ order }),
      }).then(async (r) => { if (!r.ok) { const d = await r.json(); throw new Error(d.error.message_vi); } })))
        .then(() => location.reload())
        .catch((err) => { status.textContent = err.message; status.className = "status failed"; });
    });
  });
})();
