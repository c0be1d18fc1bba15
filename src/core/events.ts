/**
 * Lifecycle and outcome events the front ends publish on `node:diagnostics_channel`, so an observer (the
 * ops module's metrics) can subscribe without the front ends knowing it exists. Publishing costs one
 * boolean check when nobody subscribes. Every field is a closed set or a number: nothing a client chose
 * travels here (observers turn fields into metric labels).
 */
import { channel } from 'node:diagnostics_channel';

/** The relay answered an Authenticate request (any outcome), `seconds` after the connection was accepted. */
export interface RelayAuthEvent {
  /** The protocol's AuthenticationError name, or a catalogue code when the relay refused before asking. */
  readonly result: string;
  readonly transport: string;
  readonly seconds: number;
}

/** The card bridge answered one command of a request. */
export interface CardCommandEvent {
  /** One of the known commands, or `unknown`. */
  readonly command: string;
  /** `ok`, or the catalogue code of the failure. */
  readonly code: string;
}

/** One APDU exchange with a card (reader names are operator config or hardware names, never a client's). */
export interface CardApduEvent {
  readonly reader: string;
  readonly seconds: number;
}

/** The sealed API finished one request. */
export interface SealedRequestEvent {
  /** A registered action's name, `unregistered` for a name the server does not have, `none` before authentication. */
  readonly action: string;
  /** HTTP status, or 0 when the connection went away before an answer. */
  readonly status: number;
}

/** The sealed API refused a request (the catalogue code says why; never who). */
export interface SealedRefusalEvent {
  readonly code: string;
}

/** A listener refused a connection (limits, allow-list, shutdown): every one, also those not logged. */
export interface ConnectionRefusedEvent {
  /** `relay`, `card-bridge`, `sealed-api`. */
  readonly frontEnd: string;
  /** The catalogue code of the refusal. */
  readonly code: string;
}

export const relayAuthChannel = channel('gatehouse:relay:auth');
export const connectionRefusedChannel = channel('gatehouse:connection:refused');
export const cardCommandChannel = channel('gatehouse:card-bridge:command');
export const cardApduChannel = channel('gatehouse:card-bridge:apdu');
export const sealedRequestChannel = channel('gatehouse:sealed-api:request');
export const sealedRefusalChannel = channel('gatehouse:sealed-api:refusal');
