// Helpers shared by the page's views: JSON requests with readable errors, element building.

// fetch() that resolves to parsed JSON, or throws an Error whose message is the server's
// "detail" sentence (every API error carries one), or says the server could not be reached.
export async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error("the server did not answer; is `convattn serve` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return body;
}

// el("td", {class: "x", onclick: f}, "text", child...) -> an element
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function showError(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

export function fmt(x, digits = 3) {
  return x === null || x === undefined ? "n/a" : Number(x).toFixed(digits);
}

export function seconds(s) {
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}
