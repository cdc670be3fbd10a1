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

/**
 * Make `container`'s children `items`, keeping the element already shown for an item with the
 * same `data-id`: it is brought up to date in place (attributes, text and child elements, matched
 * by position) instead of being replaced, and only items whose place changed are moved. A press on
 * one of its buttons that spans a re-render (the mouse down before it, up after) then still
 * clicks, and the focus stays put. A kept element keeps the listeners it was made with, so those
 * must depend on nothing but its `data-id`.
 */
export function renderKeyed(container, items) {
  keepingFocus(container, () => {
    const shown = new Map([...container.children].filter((c) => c.dataset.id).map((c) => [c.dataset.id, c]));
    const next = items.map((item) => {
      const old = item.dataset.id === undefined ? undefined : shown.get(item.dataset.id);
      if (!old || old.tagName !== item.tagName) return item;
      update(old, item);
      return old;
    });
    next.forEach((node, i) => {
      if (container.children[i] !== node) container.insertBefore(node, container.children[i] ?? null);
    });
    while (container.children.length > next.length) container.lastElementChild.remove();
  });
}

/**
 * Run `change` on `container`; if it took the focus from a control in it, give it to the control
 * with the same `data-focus` afterwards.
 */
export function keepingFocus(container, change) {
  const focused = container.contains(document.activeElement) ? document.activeElement.dataset.focus : undefined;
  change();
  if (focused && !container.contains(document.activeElement)) {
    container.querySelector(`[data-focus="${CSS.escape(focused)}"]`)?.focus();
  }
}

/** `node` made to look like `like` (a fresh element of the same tag), keeping what can be kept. */
function update(node, like) {
  for (const { name } of [...node.attributes]) if (!like.hasAttribute(name)) node.removeAttribute(name);
  for (const { name, value } of like.attributes) if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  const wanted = [...like.childNodes];
  wanted.forEach((child, i) => {
    const have = node.childNodes[i];
    if (!have) node.append(child);
    else if (have.nodeType === Node.TEXT_NODE && child.nodeType === Node.TEXT_NODE) {
      if (have.data !== child.data) have.data = child.data;
    } else if (have.nodeType === Node.ELEMENT_NODE && have.tagName === child.tagName) update(have, child);
    else have.replaceWith(child);
  });
  while (node.childNodes.length > wanted.length) node.lastChild.remove();
}
