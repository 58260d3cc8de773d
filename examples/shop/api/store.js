'use strict';
// A tiny JSON document store kept in memory and written to disk atomically
// (temp file + fsync + rename) after every change.

const fs = require('node:fs');
const path = require('node:path');
const { writeFileAtomic } = require('./kit');

const SEED_PRODUCTS = [
  { id: 1, name: 'Stoneware mug', description: 'Wheel-thrown, 350 ml, kiln-fired at 1240 °C.', priceCents: 1800 },
  { id: 2, name: 'Serving bowl', description: 'Wide celadon bowl for salads and noodles.', priceCents: 4200 },
  { id: 3, name: 'Espresso cups (pair)', description: 'Two 90 ml cups with a speckled glaze.', priceCents: 2600 },
  { id: 4, name: 'Bud vase', description: 'Small vase with an ash glaze, 12 cm tall.', priceCents: 2200 },
];

class Store {
  constructor(dir) {
    this.dir = dir;
    this.file = path.join(dir, 'store.json');
    this.data = { products: [], orders: [], nextOrderId: 1 };
  }

  // Loads the store from disk, creating the directory and seeding products if
  // needed. A corrupt store file is an error: it is never silently replaced.
  load() {
    fs.mkdirSync(this.dir, { recursive: true });
    if (fs.existsSync(this.file)) {
      let parsed;
      try {
        parsed = JSON.parse(fs.readFileSync(this.file, 'utf8'));
      } catch (err) {
        throw new Error(`cannot read store ${this.file}: ${err.message}`, { cause: err });
      }
      if (!parsed || !Array.isArray(parsed.products) || !Array.isArray(parsed.orders) || !Number.isInteger(parsed.nextOrderId)) {
        throw new Error(`store ${this.file} does not look like a shop store (products, orders, nextOrderId)`);
      }
      this.data = parsed;
    }
    if (this.data.products.length === 0) {
      this.data.products = SEED_PRODUCTS.map((p) => ({ ...p }));
      this.save();
    }
    return this;
  }

  save() {
    writeFileAtomic(this.file, `${JSON.stringify(this.data, null, 2)}\n`);
  }

  listProducts() {
    return this.data.products;
  }

  getProduct(id) {
    return this.data.products.find((p) => p.id === id) || null;
  }

  listOrders() {
    return this.data.orders;
  }

  getOrder(id) {
    return this.data.orders.find((o) => o.id === id) || null;
  }

  // The caller has validated the input. The order is only kept in memory if
  // it was written to disk.
  createOrder({ productId, quantity }) {
    const product = this.getProduct(productId);
    const order = {
      id: this.data.nextOrderId,
      productId,
      productName: product.name,
      quantity,
      unitPriceCents: product.priceCents,
      totalCents: product.priceCents * quantity,
      createdAt: new Date().toISOString(),
    };
    this.data.orders.push(order);
    this.data.nextOrderId += 1;
    try {
      this.save();
    } catch (err) {
      this.data.orders.pop();
      this.data.nextOrderId -= 1;
      throw err;
    }
    return order;
  }
}

module.exports = { Store, SEED_PRODUCTS };
