// Loaded into Azurite with `node --require` (simulators/azurite.py): its table store looks an entity
// up with LokiJS's findOne({PartitionKey, RowKey}), and LokiJS uses a binary index for the first
// property only, so every point read, insert, upsert and delete scanned the entity's whole
// partition: an initial sync writing a mailbox's link rows into one partition slowed down
// quadratically. Azure Table Storage finds an entity by its (PartitionKey, RowKey) key at any
// partition size. Azurite 3.36.0 asks for the RowKey first for this reason (Azure/Azurite#2588) but
// needs Node.js 21; this applies the same order to 3.35.0. Both lookups are strict equality, so the
// same entity is found.
"use strict";

const path = require("node:path");

const azurite = path.dirname(require.resolve("azurite/package.json", { paths: [path.join(__dirname, "..")] }));
const Loki = require(require.resolve("lokijs", { paths: [azurite] }));

const findOne = Loki.Collection.prototype.findOne;

Loki.Collection.prototype.findOne = function (query) {
  if (query !== null && typeof query === "object" && this.binaryIndices.RowKey !== undefined) {
    const keys = Object.keys(query);
    if (keys.length === 2 && keys[0] === "PartitionKey" && keys[1] === "RowKey") {
      return findOne.call(this, { RowKey: query.RowKey, PartitionKey: query.PartitionKey });
    }
  }
  return findOne.call(this, query);
};
