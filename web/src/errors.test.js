import { describe, expect, it } from 'vitest';
import { describeApiError, describeNetworkError, detailText } from './errors.js';
import { makeBox, makePoint } from './prompts.js';

const prompts = [makePoint(0, 0, 1), makePoint(0, 0, 0), makeBox({ lat: 0, lng: 0 }, { lat: 1, lng: 1 })];
const ctx = { action: 'Segmentation', prompts, source: 'Scene' };

describe('API errors in plain words', () => {
  it('names the prompt outside the view and says what to do', () => {
    const body = { detail: 'prompts[1] (45.1, 11.2) is outside the bbox', field: 'prompts[1]', error: 'InvalidRequest' };
    const msg = describeApiError(422, body, ctx);
    expect(msg).toContain('exclude point 1 is outside the map view');
    expect(msg).toContain('Pan or zoom out');
  });

  it('turns pydantic detail lists into "where: what"', () => {
    const body = { detail: [
      { loc: ['body', 'prompts', 2, 'box', 'ne', 'lat'], msg: 'Input should be less than or equal to 90', type: 'x' },
      { loc: ['body', 'zoom'], msg: 'Input should be a valid integer', type: 'y' },
    ] };
    expect(detailText(body, prompts)).toBe(
      'rectangle 1 ne lat: Input should be less than or equal to 90; zoom: Input should be a valid integer');
    expect(describeApiError(422, body, ctx)).toMatch(/^Segmentation failed at this zoom: rectangle 1 ne lat/);
    expect(describeApiError(422, { detail: [{ loc: ['body', 'multimask'], msg: 'bad' }] }, ctx))
      .toBe('Segmentation was refused: multimask: bad');
  });

  it('points at the Shape control when its option is refused (not at the zoom)', () => {
    const detail = 'regularize: the outlines to regularize hold 61234 vertices, over the 50000 one answer may take; ' +
      'zoom in, raise min_area_px or leave regularize off';
    const msg = describeApiError(422, { detail, field: 'regularize', error: 'LimitExceeded' }, ctx);
    expect(msg).toMatch(/^Segmentation could not regularize the outlines: the outlines to regularize hold 61234/);
    expect(msg).toMatch(/Set Shape to “as is”, or zoom in on fewer objects\.$/);
    expect(msg).not.toMatch(/Zoom out/);
    expect(describeApiError(422, { detail: 'smooth.iterations: must be an integer in [1, 5], got 9', field: 'smooth.iterations' }, ctx))
      .toMatch(/^Segmentation could not smooth the outlines: must be an integer/);
  });

  it('explains tile source failures with the source name and the server detail', () => {
    const msg = describeApiError(502, { detail: 'tile 16/1/2 of Scene: HTTP 404' }, ctx);
    expect(msg).toBe('Segmentation failed: the map tiles from “Scene” could not be fetched. tile 16/1/2 of Scene: HTTP 404');
    expect(describeApiError(504, { detail: 'timed out after 1 s' }, ctx)).toContain('did not answer in time');
  });

  it('says the model is not ready for a 503', () => {
    expect(describeApiError(503, { detail: 'weights missing; set SAMGIS_CHECKPOINT' }, ctx))
      .toMatch(/model is not ready: weights missing; set SAMGIS_CHECKPOINT/);
  });

  it('covers other statuses and odd bodies without losing the detail', () => {
    expect(describeApiError(413, { detail: 'body exceeds the limit' }, ctx)).toContain('too large');
    expect(describeApiError(500, 'Internal Server Error', ctx)).toBe('Segmentation failed with a server error (HTTP 500): Internal Server Error');
    expect(describeApiError(418, null, {})).toBe('The request failed (HTTP 418): no detail');
    expect(describeApiError(404, { detail: 'Not Found' }, ctx)).toContain('no such route');
    expect(detailText({ error: 'x' })).toBe('{"error":"x"}');
    expect(detailText('y'.repeat(400))).toHaveLength(301);
  });

  it('words network failures', () => {
    expect(describeNetworkError(new TypeError('Failed to fetch'), ctx)).toContain('could not be reached (Failed to fetch)');
    const abort = new Error('x');
    abort.name = 'AbortError';
    expect(describeNetworkError(abort, ctx)).toBe('Segmentation was cancelled.');
  });
});
