/* atm-risk web pages: the API key, API calls, and the map layers both pages draw.
 *
 * The key comes from the URL fragment (#key=..., which browsers never send to the server)
 * or a prompt, and stays in this tab's sessionStorage. Every request goes to the page's own
 * origin: no CDN, tiles or fonts from anywhere else. */
(function () {
  "use strict";

  const STORE = "atmRiskKey";
  const BAND_COLORS = { high: "#d7191c", elevated: "#f57c00", low: "#8c8c8c" };
  const BAND_LABELS = { high: "High", elevated: "Elevated", low: "Low" };
  const ACTION_LABELS = {
    temporary_shutdown: "Temporary shutdown",
    night_closure: "Close at night",
    harden: "Harden",
    monitor: "Monitor",
  };

  function fragment() {
    return new URLSearchParams(window.location.hash.slice(1));
  }

  /** The API key: from #key=... (then removed from the address bar), storage or a prompt. */
  function apiKey() {
    const params = fragment();
    const given = (params.get("key") || "").trim();
    if (given) {
      sessionStorage.setItem(STORE, given);
      params.delete("key");
      const rest = params.toString();
      const url = window.location.pathname + window.location.search + (rest ? "#" + rest : "");
      window.history.replaceState(null, "", url);
    }
    let key = sessionStorage.getItem(STORE);
    if (!key) {
      key = (window.prompt("Your atm-risk API key (from `atm-risk keys create`):") || "").trim();
      if (key) sessionStorage.setItem(STORE, key);
    }
    return key || null;
  }

  function forgetKey() {
    sessionStorage.removeItem(STORE);
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(typeof detail === "string" ? detail : "HTTP " + status);
      this.status = status;
      this.detail = detail;
    }
  }

  /** fetch() on this server with the Bearer key; JSON in, JSON out; ApiError on non-2xx. */
  async function api(path, options) {
    const key = apiKey();
    if (!key) throw new ApiError(401, "no API key given");
    const opts = Object.assign({ method: "GET" }, options || {});
    const headers = { Authorization: "Bearer " + key, Accept: "application/json" };
    let body;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const response = await fetch(path, {
      method: opts.method,
      headers: headers,
      body: body,
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = text;
      }
    }
    if (!response.ok) {
      const detail = data && typeof data === "object" && "detail" in data ? data.detail : data;
      throw new ApiError(response.status, detail);
    }
    return data;
  }

  /** A DOM element: el("p", {class: "x"}, "text", child, ...). Text is never parsed as HTML. */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([name, value]) {
      if (value === null || value === undefined || value === false) return;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, value === true ? "" : String(value));
    });
    for (let i = 2; i < arguments.length; i += 1) {
      const child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setStatus(text, kind) {
    const node = document.getElementById("status");
    if (!node) return;
    node.textContent = text;
    node.className = "status no-print" + (kind ? " status-" + kind : "");
  }

  function percent(p) {
    if (p === null || p === undefined) return "n/a";
    return p >= 0.1 ? (p * 100).toFixed(0) + " %" : (p * 100).toFixed(2) + " %";
  }

  function euro(value) {
    return "EUR " + Math.round(value).toLocaleString("en-GB");
  }

  /** Show who the key stands for in the top bar; returns /api/v1/me. */
  async function principal() {
    const me = await api("/api/v1/me");
    const who = document.getElementById("who");
    if (who) {
      const detail = me.tenant || (me.regions.length ? me.regions.join(", ") : "all machines");
      who.textContent = me.role + " · " + detail;
    }
    const forget = document.getElementById("forget-key");
    if (forget) {
      forget.hidden = false;
      forget.addEventListener("click", function () {
        forgetKey();
        window.location.reload();
      });
    }
    return me;
  }

  /** A Leaflet map with the basemap pane (boundaries, drawn from the shipped layers). */
  function newMap(id) {
    const map = L.map(id, { preferCanvas: true, zoomSnap: 0.25, fadeAnimation: false });
    map.createPane("basemap");
    map.getPane("basemap").style.zIndex = 250;
    map.attributionControl.setPrefix("Leaflet");
    map.setView([52.2, 5.3], 7);
    return map;
  }

  function drawBoundaries(map, geojson) {
    const layer = L.geoJSON(geojson, {
      pane: "basemap",
      renderer: L.canvas({ pane: "basemap" }),
      interactive: false,
      style: function () {
        return { color: "#7d8a96", weight: 1, fillColor: "#f4f1ea", fillOpacity: 1 };
      },
    });
    layer.addTo(map);
    map.attributionControl.addAttribution("Boundaries: CBS, BKG");
    return layer;
  }

  const BAND_ORDER = { low: 0, elevated: 1, high: 2 };

  /** Machines as circle markers coloured by band (high on top); returns {layer, markers}. */
  function drawMachines(map, geojson, onClick) {
    const features = geojson.features.slice().sort(function (a, b) {
      const pa = BAND_ORDER[a.properties.risk_band] ?? -1;
      const pb = BAND_ORDER[b.properties.risk_band] ?? -1;
      return pa - pb || (b.properties.rank || 0) - (a.properties.rank || 0);
    });
    const markers = new Map();
    const layer = L.layerGroup();
    features.forEach(function (feature) {
      const p = feature.properties;
      const [lon, lat] = feature.geometry.coordinates;
      const band = p.risk_band;
      const marker = L.circleMarker([lat, lon], {
        radius: band === "high" ? 9 : band === "elevated" ? 7.5 : 6,
        color: band ? "#222" : "#666",
        weight: 1,
        fillColor: BAND_COLORS[band] || "#ffffff",
        fillOpacity: 0.92,
        bubblingMouseEvents: false,
      });
      marker.feature = feature;
      marker.on("click", function () {
        onClick(feature, marker);
      });
      marker.addTo(layer);
      markers.set(p.id, marker);
    });
    layer.addTo(map);
    return { layer: layer, markers: markers };
  }

  function legend() {
    const control = L.control({ position: "bottomright" });
    control.onAdd = function () {
      const box = el("div", { class: "legend" }, el("strong", {}, "Risk band"));
      Object.keys(BAND_COLORS)
        .reverse()
        .forEach(function (band) {
          const swatch = el("span", { class: "swatch swatch-" + band });
          box.append(el("div", {}, swatch, BAND_LABELS[band]));
        });
      box.append(el("div", {}, el("span", { class: "swatch swatch-incident" }), "Attack"));
      box.append(el("div", {}, el("span", { class: "swatch swatch-motorway" }), "Motorway access"));
      box.append(el("div", {}, el("span", { class: "swatch swatch-patrol" }), "Patrol position"));
      return box;
    };
    return control;
  }

  window.AtmRisk = {
    ACTION_LABELS: ACTION_LABELS,
    BAND_LABELS: BAND_LABELS,
    ApiError: ApiError,
    api: api,
    apiKey: apiKey,
    drawBoundaries: drawBoundaries,
    drawMachines: drawMachines,
    el: el,
    euro: euro,
    forgetKey: forgetKey,
    fragment: fragment,
    legend: legend,
    newMap: newMap,
    percent: percent,
    principal: principal,
    setStatus: setStatus,
  };
})();
