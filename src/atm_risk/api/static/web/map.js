/* The risk map: basemap from the shipped boundaries, the principal's machines by risk band,
 * attacks, motorway access points and (police, operators) tonight's patrol positions.
 * Sets window.__mapReady = true and window.__mapCounts once everything is drawn. */
(function () {
  "use strict";

  const R = window.AtmRisk;
  const el = R.el;

  function list(items) {
    if (!items || !items.length) return null;
    return el("ul", {}, ...items.map((text) => el("li", {}, text)));
  }

  function machinePopup(feature, horizonDays) {
    const p = feature.properties;
    const band = p.risk_band;
    const box = el("div", { class: "machine-popup", dataset: { machine: p.id } });
    box.append(el("h3", {}, p.operator + " / " + p.atm_id));
    const where = [p.address, p.city].filter(Boolean).join(", ");
    if (where) box.append(el("p", { class: "address" }, where));
    if (!band) {
      box.append(el("p", {}, "Not scored yet."));
    } else {
      const facts = el(
        "dl",
        { class: "facts" },
        el("dt", {}, "Risk band"),
        el("dd", {}, el("span", { class: "band band-" + band }, R.BAND_LABELS[band] || band)),
        el("dt", {}, "Probability"),
        el(
          "dd",
          { class: "probability" },
          R.percent(p.probability) + (horizonDays ? " in the next " + horizonDays + " days" : ""),
        ),
        el("dt", {}, "Score"),
        el("dd", { class: "score" }, p.score === null ? "n/a" : Number(p.score).toFixed(3)),
        el("dt", {}, "Rank"),
        el("dd", {}, p.rank === null ? "n/a" : "#" + p.rank),
      );
      if (p.expected_loss_eur !== undefined && p.expected_loss_eur !== null) {
        facts.append(el("dt", {}, "Expected loss"), el("dd", {}, R.euro(p.expected_loss_eur)));
      }
      box.append(facts);
      box.append(
        el(
          "p",
          { class: "action" },
          "Action: ",
          el("strong", { class: "action-name" }, R.ACTION_LABELS[p.action] || p.action || "none"),
        ),
      );
      const why = list(p.action_reasons);
      if (why) box.append(el("div", { class: "action-reasons" }, why));
      const reasons = list(p.reasons);
      if (reasons) box.append(el("p", { class: "sub" }, "Why at risk:"), reasons);
    }
    if (p.status && p.status !== "active") box.append(el("p", { class: "sub" }, "Status: " + p.status));
    const report = el(
      "a",
      { href: "/report#machine=" + encodeURIComponent(p.id), class: "report-link" },
      "Report an attack on this machine",
    );
    box.append(el("p", {}, report));
    return box;
  }

  function incidentPopup(item) {
    return el(
      "div",
      { class: "incident-popup" },
      el("h3", {}, "Attack " + item.when),
      el("p", {}, item.method.replace(/_/g, " ") + ", " + item.outcome.replace(/_/g, " ")),
      item.place ? el("p", {}, item.place) : null,
      el("p", { class: "sub" }, item.id + (item.simulated ? " (simulated)" : "")),
    );
  }

  function drawIncidents(map, items) {
    const layer = L.layerGroup();
    let n = 0;
    items.forEach(function (item) {
      if (item.lat === null || item.lon === null) return;
      L.circleMarker([item.lat, item.lon], {
        radius: 4.5,
        color: "#ffffff",
        weight: 1.5,
        fillColor: "#3b0a45",
        fillOpacity: 1,
      })
        .bindPopup(() => incidentPopup(item))
        .addTo(layer);
      n += 1;
    });
    return { layer: layer, count: n };
  }

  function drawMotorway(geojson) {
    const layer = L.layerGroup();
    geojson.features.forEach(function (f) {
      const [lon, lat] = f.geometry.coordinates;
      L.circleMarker([lat, lon], {
        radius: 2,
        stroke: false,
        fillColor: "#2f6fce",
        fillOpacity: 0.55,
      })
        .bindTooltip(f.properties.label || "motorway access")
        .addTo(layer);
    });
    return layer;
  }

  function drawPatrol(docs) {
    const layer = L.layerGroup();
    let n = 0;
    docs.forEach(function (doc) {
      doc.features.forEach(function (f) {
        const [lon, lat] = f.geometry.coordinates;
        const p = f.properties;
        if (p.reach_km) {
          L.circle([lat, lon], {
            radius: p.reach_km * 1000,
            color: "#00796b",
            weight: 1,
            dashArray: "4 4",
            fill: false,
            interactive: false,
          }).addTo(layer);
        }
        const label = el("span", {}, String(p.position ?? n + 1));
        L.marker([lat, lon], {
          icon: L.divIcon({ className: "patrol-icon", html: label, iconSize: [22, 22] }),
          title: "Patrol position " + (p.position ?? ""),
        })
          .bindPopup(() =>
            el(
              "div",
              { class: "patrol-popup" },
              el("h3", {}, "Patrol position " + (p.position ?? "")),
              el("p", {}, (p.label || "") + (p.kind ? " (" + p.kind.replace(/_/g, " ") + ")" : "")),
              p.machines_covered !== undefined
                ? el("p", {}, p.machines_covered + " machine(s) within reach")
                : null,
            ),
          )
          .addTo(layer);
        n += 1;
      });
    });
    return { layer: layer, count: n };
  }

  async function patrolDocs(me) {
    const base = "/api/v1/plans/patrol?units=5&minutes=10&format=geojson";
    if (me.role === "operator") return [await R.api(base)];
    if (me.role === "police") {
      return Promise.all(
        me.regions.slice(0, 12).map((r) => R.api(base + "&region=" + encodeURIComponent(r))),
      );
    }
    return []; // banks do not get patrol plans
  }

  async function main() {
    window.__mapReady = false;
    const map = R.newMap("map");
    window.__atmMap = { map: map, machines: new Map() };
    let me;
    try {
      me = await R.principal();
    } catch (err) {
      if (err.status === 401) R.forgetKey();
      R.setStatus(
        err.status === 401
          ? "The API key was not accepted. Open /map#key=YOUR_KEY or reload to enter it."
          : "Could not load the map: " + err.message,
        "error",
      );
      window.__mapError = String(err.message);
      return;
    }
    R.setStatus("Loading machines…");
    const [boundaries, machines, incidents, motorway, patrol] = await Promise.all([
      R.api("/api/v1/map/boundaries.geojson"),
      R.api("/api/v1/map/machines.geojson"),
      R.api("/api/v1/incidents?limit=1000"),
      R.api("/api/v1/map/motorway.geojson"),
      patrolDocs(me).catch(function (err) {
        return { error: err };
      }),
    ]);
    const basemap = R.drawBoundaries(map, boundaries);
    const motorwayLayer = drawMotorway(motorway).addTo(map);
    const horizon = machines.properties.horizon_days;
    const drawn = R.drawMachines(map, machines, function (feature, marker) {
      L.popup({ maxWidth: 340, offset: [0, -4] })
        .setLatLng(marker.getLatLng())
        .setContent(machinePopup(feature, horizon))
        .openOn(map);
    });
    window.__atmMap.machines = drawn.markers;
    const attacks = drawIncidents(map, incidents.items);
    attacks.layer.addTo(map);
    const overlays = {
      Machines: drawn.layer,
      Attacks: attacks.layer,
      "Motorway access": motorwayLayer,
    };
    let patrolCount = 0;
    if (Array.isArray(patrol) && patrol.length) {
      const patrolLayer = drawPatrol(patrol);
      patrolLayer.layer.addTo(map);
      overlays["Patrol positions"] = patrolLayer.layer;
      patrolCount = patrolLayer.count;
    }
    overlays.Boundaries = basemap;
    L.control.layers(null, overlays, { collapsed: true }).addTo(map);
    R.legend().addTo(map);
    L.control.scale({ imperial: false }).addTo(map);

    const points = machines.features.map((f) => [f.geometry.coordinates[1], f.geometry.coordinates[0]]);
    if (points.length) {
      map.fitBounds(L.latLngBounds(points).pad(0.15), { maxZoom: 12, animate: false });
    } else if (boundaries.features.length) {
      map.fitBounds(basemap.getBounds(), { animate: false });
    }
    const bands = { high: 0, elevated: 0, low: 0, unscored: 0 };
    machines.features.forEach(function (f) {
      const band = f.properties.risk_band;
      bands[band in bands ? band : "unscored"] += 1;
    });
    window.__mapCounts = {
      machines: machines.features.length,
      high: bands.high,
      elevated: bands.elevated,
      low: bands.low,
      unscored: bands.unscored,
      incidents: attacks.count,
      motorway: motorway.features.length,
      patrol: patrolCount,
      boundaries: boundaries.features.length,
    };
    const run = machines.properties.run_id
      ? "run " + machines.properties.run_id + " of " + String(machines.properties.as_of).slice(0, 10)
      : "no scoring run yet";
    let note = "";
    if (patrol && patrol.error) note = " · patrol plan unavailable: " + patrol.error.message;
    R.setStatus(
      machines.features.length +
        " machines (" +
        bands.high +
        " high, " +
        bands.elevated +
        " elevated) · " +
        attacks.count +
        " attacks · " +
        run +
        note,
    );
    map.whenReady(function () {
      window.__mapReady = true;
      document.body.dataset.mapReady = "true";
    });
  }

  main().catch(function (err) {
    R.setStatus("Could not draw the map: " + err.message, "error");
    window.__mapError = String(err.message);
  });
})();
