// Small DOM helpers the pages share. Text from the API only ever reaches a page as text nodes
// (children that are strings), never as HTML.

export const $ = (id) => document.getElementById(id);

/** An element with attributes (`on…` ones become listeners; false, null and undefined are left out). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** Minor units as a price: 1290, "EUR" → "12.90 EUR". */
export const money = (cents, currency) => `${(cents / 100).toFixed(2)} ${currency}`;
