/* The cluster map: Leaflet over the configured tiles, shown only once a tile has loaded.
   Without tiles (an office offline, no tile URL) the server-drawn SVG coordinate plot stays. */
(function () {
  "use strict";
  var box = document.getElementById("map");
  if (!box || !window.L) { return; }
  var tiles = box.getAttribute("data-tiles");
  if (!tiles) { return; }
  var note = document.getElementById("map-note");
  fetch(box.getAttribute("data-points"), {credentials: "same-origin"})
    .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
    .then(function (data) {
      if (!data.points.length) { return; }
      // Leaflet needs a laid-out box, but nobody should see a grey map whose tiles never come:
      // lay it out off-screen until the first tile has loaded.
      box.style.display = "block";
      box.style.position = "absolute";
      box.style.left = "-10000px";
      var map = L.map(box, {preferCanvas: true});
      var shown = false;
      // The pages send no Referer off-site (Referrer-Policy: same-origin), but OpenStreetMap's tile
      // policy wants one: the tiles alone send this site's origin, never a page's path.
      var layer = L.tileLayer(tiles, {maxZoom: 19, attribution: "&copy; OpenStreetMap",
        referrerPolicy: "strict-origin-when-cross-origin"});
      layer.on("tileload", function () {
        if (shown) { return; }
        shown = true;
        box.style.display = "block";
        box.style.position = "";
        box.style.left = "";
        map.invalidateSize();
        document.getElementById("plot").style.display = "none";
        if (note) { note.textContent = "Bấm vào một điểm để xem cụm loa."; }
      });
      layer.on("tileerror", function () {
        if (!shown) {
          box.style.display = "none";
          if (note) { note.textContent = "Không tải được nền bản đồ; đang dùng sơ đồ theo toạ độ."; }
        }
      });
      layer.addTo(map);
      var bounds = [];
      data.points.forEach(function (p) {
        var m = L.circleMarker([p.lat, p.lon], {radius: 6, color: "#fff", weight: 1,
          fillColor: data.colours[p.status], fillOpacity: 0.95});
        m.bindPopup("<a href=\"/clusters/" + encodeURIComponent(p.id) + "\">" +
          p.name.replace(/[&<>"]/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; }) +
          "</a><br>" + data.labels[p.status]);
        m.addTo(map);
        bounds.push([p.lat, p.lon]);
      });
      map.fitBounds(bounds, {padding: [20, 20], maxZoom: 15});
    })
    .catch(function () { box.style.display = "none"; });
})();
