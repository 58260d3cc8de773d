'use strict';
// A tiny JSON document store kept in memory and written to disk atomically
// (temp file + fsync + rename) after every change. Several api replicas may
// share one DATA_DIR: reads reload the file when another replica replaced it,
// and writes hold a lock directory so that no order is lost between replicas.

const fs = require('node:fs');
const path = require('node:path');
const { writeFileAtomic } = require('./kit');

const SEED_PRODUCTS = [
  { id: 1, name: 'Stoneware mug', description: 'Wheel-thrown, 350 ml, kiln-fired at 1240 °C.', priceCents: 1800 },
  { id: 2, name: 'Serving bowl', description: 'Wide celadon bowl for salads and noodles.', priceCents: 4200 },
  { id: 3, name: 'Espresso cups (pair)', description: 'Two 90 ml cups with a speckled glaze.', priceCents: 2600 },
  { id: 4, name: 'Bud vase', description: 'Small vase with an ash glaze, 12 cm tall.', priceCents: 2200 },
];

const LOCK_WAIT_MS = 2000;
const LOCK_STALE_MS = 10000;

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

class Store {
  constructor(dir) {
    this.dir = dir;
    this.file = path.join(dir, 'store.json');
    this.lock = path.join(dir, 'store.lock');
    this.data = { products: [], orders: [], nextOrderId: 1 };
    this.version = null;
  }

  // Identifies the file on disk: an atomic rename gives it a new inode.
  fileVersion() {
    try {
      const st = fs.statSync(this.file);
      return `${st.ino}:${st.mtimeMs}:${st.size}`;
    } catch {
      return null;
    }
  }

  // Reloads when another replica replaced the file since we last read it.
  refresh() {
    const version = this.fileVersion();
    if (version !== null && version !== this.version) {
      this.read();
    }
  }

  read() {
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
    this.version = this.fileVersion();
  }

  // Runs fn while holding the store's lock (a directory: mkdir is atomic). A
  // lock older than LOCK_STALE_MS belonged to a replica that died holding it.
  locked(fn) {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        fs.mkdirSync(this.lock);
        break;
      } catch (err) {
        if (err.code !== 'EEXIST') throw err;
        try {
          if (Date.now() - fs.statSync(this.lock).mtimeMs > LOCK_STALE_MS) fs.rmdirSync(this.lock);
        } catch {
          // Someone else removed it first.
        }
        if (Date.now() > deadline) throw new Error(`store ${this.file} is locked by another replica`);
        sleepSync(5);
      }
    }
    try {
      return fn();
    } finally {
      fs.rmdirSync(this.lock);
    }
  }

  // Loads the store from disk, creating the directory and seeding products if
  // needed. A corrupt store file is an error: it is never silently replaced.
  load() {
    fs.mkdirSync(this.dir, { recursive: true });
    this.locked(() => {
      if (fs.existsSync(this.file)) this.read();
      if (this.data.products.length === 0) {
        this.data.products = SEED_PRODUCTS.map((p) => ({ ...p }));
        this.save();
      }
    });
    return this;
  }

  save() {
    writeFileAtomic(this.file, `${JSON.stringify(this.data, null, 2)}\n`);
    this.version = this.fileVersion();
  }

  listProducts() {
    this.refresh();
    return this.data.products;
  }

  getProduct(id) {
    this.refresh();
    return this.data.products.find((p) => p.id === id) || null;
  }

  listOrders() {
    this.refresh();
    return this.data.orders;
  }

  getOrder(id) {
    this.refresh();
    return this.data.orders.find((o) => o.id === id) || null;
  }

  // The caller has validated the input. The order is only kept in memory if
  // it was written to disk.
  createOrder(input) {
    return this.locked(() => {
      this.refresh();
      return this.insertOrder(input);
    });
  }

  insertOrder({ productId, quantity }) {
    const product = this.data.products.find((p) => p.id === productId);
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
