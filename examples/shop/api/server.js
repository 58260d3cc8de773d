'use strict';
// Shop API: products and orders as JSON, stored in DATA_DIR/store.json.
//
// Env: PORT (required, 0 = any free port), HOST, DATA_DIR (default ./data),
//      KILN_RELEASE, FAIL_RATE (0..1), FAIL_AFTER_SECONDS.

const path = require('node:path');
const { HttpError, createService, fatal, numberEnv, readBody, requirePort, sendJson } = require('./kit');
const { Store } = require('./store');

const MAX_BODY_BYTES = 64 * 1024;

const port = requirePort();
const dataDir = path.resolve(process.env.DATA_DIR || './data');
const failRate = numberEnv('FAIL_RATE', 0, { min: 0, max: 1 });
const failAfterSeconds = numberEnv('FAIL_AFTER_SECONDS', 0, { min: 0 });
const startedAt = Date.now();

const store = new Store(dataDir);
try {
  store.load();
} catch (err) {
  fatal(err.message);
}

function parseId(raw) {
  return /^[1-9]\d{0,15}$/.test(raw) ? Number(raw) : null;
}

function validateOrder(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return ['body must be a JSON object like {"productId": 1, "quantity": 2}'];
  }
  const errors = [];
  if (!Number.isInteger(body.productId)) errors.push('productId must be an integer');
  else if (!store.getProduct(body.productId)) errors.push(`product ${body.productId} does not exist`);
  if (!Number.isInteger(body.quantity) || body.quantity < 1 || body.quantity > 100) {
    errors.push('quantity must be an integer between 1 and 100');
  }
  return errors;
}

let ordersCreated;
let injectedFailures;

const routes = [
  ['GET', '/api/version', ({ res, release }) => sendJson(res, 200, { service: 'api', release })],
  ['GET', '/api/products', ({ res }) => sendJson(res, 200, { products: store.listProducts() })],
  [
    'GET',
    '/api/products/:id',
    ({ res, params }) => {
      const product = store.getProduct(parseId(params.id));
      if (!product) throw new HttpError(404, `product ${params.id} not found`);
      sendJson(res, 200, product);
    },
  ],
  ['GET', '/api/orders', ({ res }) => sendJson(res, 200, { orders: store.listOrders() })],
  [
    'GET',
    '/api/orders/:id',
    ({ res, params }) => {
      const order = store.getOrder(parseId(params.id));
      if (!order) throw new HttpError(404, `order ${params.id} not found`);
      sendJson(res, 200, order);
    },
  ],
  [
    'POST',
    '/api/orders',
    async ({ req, res }) => {
      const raw = await readBody(req, MAX_BODY_BYTES);
      let body;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new HttpError(400, 'body is not valid JSON');
      }
      const errors = validateOrder(body);
      if (errors.length > 0) throw new HttpError(400, 'invalid order', errors);
      const order = store.createOrder({ productId: body.productId, quantity: body.quantity });
      ordersCreated.inc();
      sendJson(res, 201, order, { Location: `/api/orders/${order.id}` });
    },
  ],
];

// Fault injection for demos: a share of /api/* requests fails with 500.
function before({ url, res }) {
  if (failRate > 0 && url.pathname.startsWith('/api/') && (Date.now() - startedAt) / 1000 >= failAfterSeconds && Math.random() < failRate) {
    injectedFailures.inc();
    sendJson(res, 500, { error: 'injected failure (FAIL_RATE)' });
    return true;
  }
  return false;
}

const service = createService({ name: 'api', routes, before });
ordersCreated = service.registry.counter('shop_orders_created_total', 'Orders created.');
injectedFailures = service.registry.counter('shop_injected_failures_total', 'Requests failed on purpose by FAIL_RATE.');

service.start(port).catch((err) => fatal(`cannot listen on port ${port}: ${err.message}`));
