'use strict';
// Shop web front end: server-side rendered HTML that talks to the api.
//
// Env: PORT (required, 0 = any free port), HOST, API_URL (required),
//      API_TIMEOUT_MS (default 3000), KILN_RELEASE.

const { HttpError, createService, fatal, numberEnv, readBody, requirePort, requireUrl, sendText } = require('./kit');

const MAX_BODY_BYTES = 64 * 1024;

const port = requirePort();
const apiUrl = requireUrl('API_URL');
const apiTimeoutMs = numberEnv('API_TIMEOUT_MS', 3000, { min: 1, max: 60000, integer: true });

// ------------------------------------------------------------------ api client

class ApiUnavailable extends Error {}

async function callApi(method, path, body) {
  let res;
  try {
    res = await fetch(`${apiUrl}${path}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(apiTimeoutMs),
    });
  } catch (err) {
    throw new ApiUnavailable(`api unreachable: ${err.cause ? err.cause.code || err.cause.message : err.message}`);
  }
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (res.status >= 500) throw new ApiUnavailable(`api answered ${res.status}`);
  return { status: res.status, data, release: res.headers.get('x-release') };
}

// ------------------------------------------------------------------ rendering

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function money(cents) {
  return `$${(cents / 100).toFixed(2)}`;
}

const CSS = `
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#faf7f2;color:#2b2621}
header{background:#7a3e1d;color:#fff;padding:1rem}
header a{color:#fff;text-decoration:none}
h1{margin:0;font-size:1.4rem}
main{max-width:40rem;margin:0 auto;padding:1rem}
.card{background:#fff;border:1px solid #e6ddd2;border-radius:.6rem;padding:1rem;margin:0 0 1rem}
.card h2{margin:0 0 .25rem;font-size:1.1rem}
.price{font-weight:600;color:#7a3e1d}
form{display:flex;gap:.5rem;flex-wrap:wrap;align-items:center;margin-top:.5rem}
input[type=number]{width:5rem;padding:.5rem;font-size:1rem;border:1px solid #c9bcae;border-radius:.4rem}
button{padding:.55rem 1rem;font-size:1rem;border:0;border-radius:.4rem;background:#7a3e1d;color:#fff}
.error{background:#fde8e6;border-color:#e2a39b}
footer{color:#8a7f74;font-size:.8rem;text-align:center;padding:1rem}
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:0}
dt{color:#8a7f74}dd{margin:0}
`;

function page(title, body, release) {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} · Kiln Shop</title>
<style>${CSS}</style>
</head>
<body>
<header><h1><a href="/">Kiln Shop</a></h1></header>
<main>
${body}
</main>
<footer>web ${esc(release)}</footer>
</body>
</html>
`;
}

function productCard(p) {
  return `<section class="card">
<h2>${esc(p.name)}</h2>
<p>${esc(p.description || '')}</p>
<p class="price">${money(p.priceCents)}</p>
<form method="post" action="/order">
<input type="hidden" name="productId" value="${esc(p.id)}">
<label>Qty <input type="number" name="quantity" value="1" min="1" max="100" required></label>
<button type="submit">Order</button>
</form>
</section>`;
}

function sendPage(ctx, status, title, body) {
  sendText(ctx.res, status, 'text/html; charset=utf-8', page(title, body, ctx.release));
}

function errorPage(ctx, status, message, details) {
  const list = Array.isArray(details) && details.length > 0 ? `<ul>${details.map((d) => `<li>${esc(d)}</li>`).join('')}</ul>` : '';
  sendPage(ctx, status, `Error ${status}`, `<section class="card error"><h2>${esc(message)}</h2>${list}<p><a href="/">Back to the shop</a></p></section>`);
}

function unavailable(ctx, err) {
  process.stderr.write(`web: ${err.message}\n`);
  errorPage(ctx, 503, 'The shop is temporarily unavailable: the API cannot be reached. Please try again in a moment.');
}

// -------------------------------------------------------------------- routes

function toNumberIfInteger(value) {
  return typeof value === 'string' && /^-?\d{1,15}$/.test(value.trim()) ? Number(value.trim()) : value;
}

const routes = [
  [
    'GET',
    '/',
    async (ctx) => {
      let result;
      try {
        result = await callApi('GET', '/api/products');
      } catch (err) {
        if (err instanceof ApiUnavailable) return unavailable(ctx, err);
        throw err;
      }
      const products = result.data && Array.isArray(result.data.products) ? result.data.products : null;
      if (result.status !== 200 || !products) return unavailable(ctx, new Error(`unexpected products answer ${result.status}`));
      const body = products.length > 0 ? products.map(productCard).join('\n') : '<p>No products yet.</p>';
      sendPage(ctx, 200, 'Products', `<p>Hand-made ceramics, fired to order.</p>\n${body}`);
    },
  ],
  [
    'POST',
    '/order',
    async (ctx) => {
      const raw = await readBody(ctx.req, MAX_BODY_BYTES);
      const form = new URLSearchParams(raw.toString('utf8'));
      const order = { productId: toNumberIfInteger(form.get('productId')), quantity: toNumberIfInteger(form.get('quantity')) };
      let result;
      try {
        result = await callApi('POST', '/api/orders', order);
      } catch (err) {
        if (err instanceof ApiUnavailable) return unavailable(ctx, err);
        throw err;
      }
      if (result.status === 201 && result.data && Number.isInteger(result.data.id)) {
        ctx.res.writeHead(303, { Location: `/orders/${result.data.id}`, 'Content-Length': 0 });
        ctx.res.end();
        return;
      }
      if (result.status === 400 || result.status === 413) {
        const details = result.data && Array.isArray(result.data.details) ? result.data.details : [];
        return errorPage(ctx, result.status, `Your order could not be placed: ${result.data ? result.data.error : 'invalid order'}`, details);
      }
      throw new Error(`unexpected api answer ${result.status} to POST /api/orders`);
    },
  ],
  [
    'GET',
    '/orders/:id',
    async (ctx) => {
      if (!/^[1-9]\d{0,15}$/.test(ctx.params.id)) throw new HttpError(404, 'Order not found');
      let result;
      try {
        result = await callApi('GET', `/api/orders/${ctx.params.id}`);
      } catch (err) {
        if (err instanceof ApiUnavailable) return unavailable(ctx, err);
        throw err;
      }
      if (result.status === 404) throw new HttpError(404, 'Order not found');
      if (result.status !== 200 || !result.data) throw new Error(`unexpected api answer ${result.status} to GET order`);
      const o = result.data;
      sendPage(
        ctx,
        200,
        `Order #${o.id}`,
        `<section class="card">
<h2>Thank you! Order #${esc(o.id)} is placed.</h2>
<dl>
<dt>Product</dt><dd>${esc(o.productName)}</dd>
<dt>Quantity</dt><dd>${esc(o.quantity)}</dd>
<dt>Unit price</dt><dd>${money(o.unitPriceCents)}</dd>
<dt>Total</dt><dd class="price">${money(o.totalCents)}</dd>
<dt>Placed</dt><dd>${esc(o.createdAt)}</dd>
</dl>
<p><a href="/">Continue shopping</a></p>
</section>`,
      );
    },
  ],
];

const service = createService({ name: 'web', routes, renderError: errorPage });
service.start(port).catch((err) => fatal(`cannot listen on port ${port}: ${err.message}`));
