import { describe, expect, it } from 'vitest';
import {
  SHAPES, boxCorners, describePrompt, isDegenerateBox, makeBox, makePoint, movedBox, promptIndexFromField,
  requestZoom, segmentRequest, shapeFields, shapeValue, summarizePrompts, toApiPrompt, withShape,
} from './prompts.js';

const bounds = { south: 44.99, west: 11.23, north: 45.01, east: 11.27 };

describe('prompts → /v1/segment body', () => {
  it('maps points and boxes to the API models in order', () => {
    const prompts = [
      makePoint(45, 11.25, 1),
      makePoint(45.0004, 11.2504, 0),
      makeBox({ lat: 45.001, lng: 11.251 }, { lat: 44.999, lng: 11.249 }),
    ];
    const req = segmentRequest({ bounds, zoom: 17, source: { id: 'OpenStreetMap.Mapnik', min_zoom: 0, max_zoom: 19 }, prompts, multimask: true });
    expect(req).toEqual({
      bbox: { ne: { lat: 45.01, lng: 11.27 }, sw: { lat: 44.99, lng: 11.23 } },
      zoom: 17,
      source: 'OpenStreetMap.Mapnik',
      prompts: [
        { type: 'point', lat: 45, lng: 11.25, label: 1 },
        { type: 'point', lat: 45.0004, lng: 11.2504, label: 0 },
        { type: 'box', ne: { lat: 45.001, lng: 11.251 }, sw: { lat: 44.999, lng: 11.249 } },
      ],
      multimask: true,
      window_budget: 4,
    });
    expect(Object.keys(req.prompts[0])).not.toContain('id');
  });

  it('clamps the view to valid lat/lng (a zoomed-out view spans more than the world)', () => {
    const req = segmentRequest({ bounds: { south: -95, west: -200, north: 95, east: 250 }, zoom: 1.2, source: 'Scene', prompts: [makePoint(0, 0)] });
    expect(req.bbox).toEqual({ ne: { lat: 90, lng: 180 }, sw: { lat: -90, lng: -180 } });
    expect(req.zoom).toBe(1);
    expect(req.source).toBe('Scene');
  });

  it('keeps the zoom an integer inside the source range', () => {
    expect(requestZoom(16.6, { min_zoom: 0, max_zoom: 19 })).toBe(17);
    expect(requestZoom(21, { min_zoom: 0, max_zoom: 18 })).toBe(18);
    expect(requestZoom(2, { min_zoom: 5, max_zoom: 18 })).toBe(5);
    expect(requestZoom(30, null)).toBe(24);
  });

  it('rounds coordinates to 1e-7 degrees', () => {
    expect(toApiPrompt(makePoint(45.123456789, 11.987654321))).toEqual({ type: 'point', lat: 45.1234568, lng: 11.9876543, label: 1 });
  });

  it('normalises box corners whatever the drag direction', () => {
    expect(boxCorners({ lat: 2, lng: 5 }, { lat: 1, lng: 7 })).toEqual({ sw: { lat: 1, lng: 5 }, ne: { lat: 2, lng: 7 } });
    const b = makeBox({ lat: 2, lng: 5 }, { lat: 1, lng: 7 });
    expect(movedBox(b, 1, -1)).toMatchObject({ sw: { lat: 2, lng: 4 }, ne: { lat: 3, lng: 6 } });
    expect(isDegenerateBox(b)).toBe(false);
    expect(isDegenerateBox(makeBox({ lat: 1, lng: 1 }, { lat: 1, lng: 2 }))).toBe(true);
  });

  it('gives every prompt its own id and a 0/1 label', () => {
    const a = makePoint(0, 0, true);
    const b = makePoint(0, 0, 0);
    expect(a.id).not.toBe(b.id);
    expect([a.label, b.label]).toEqual([1, 0]);
    expect(() => toApiPrompt({ type: 'circle' })).toThrow(/circle/);
  });
});

describe('prompt words', () => {
  const prompts = [makePoint(0, 0, 1), makePoint(0, 0, 0), makePoint(0, 0, 1), makeBox({ lat: 0, lng: 0 }, { lat: 1, lng: 1 })];

  it('numbers prompts per kind, as the user counts them', () => {
    expect(describePrompt(prompts, 0)).toBe('include point 1');
    expect(describePrompt(prompts, 1)).toBe('exclude point 1');
    expect(describePrompt(prompts, 2)).toBe('include point 2');
    expect(describePrompt(prompts, 3)).toBe('rectangle 1');
    expect(describePrompt(prompts, 9)).toBe('prompt 10');
  });

  it('summarises a prompt set', () => {
    expect(summarizePrompts(prompts)).toBe('2 include points, 1 exclude point, 1 rectangle');
    expect(summarizePrompts([])).toBe('no prompts');
  });

  it('reads the prompt index from API error fields', () => {
    expect(promptIndexFromField('prompts[2]')).toBe(2);
    expect(promptIndexFromField('prompts.0.lat')).toBe(0);
    expect(promptIndexFromField('zoom')).toBe(-1);
    expect(promptIndexFromField(null)).toBe(-1);
  });
});

describe('outline shape → regularize / smooth', () => {
  const args = { bounds, zoom: 17, source: 'Scene', prompts: [makePoint(45, 11.25)] };

  it('sends nothing for "as is", and one flag of the API for the others', () => {
    expect(Object.keys(SHAPES)).toEqual(['as-is', 'regularize', 'smooth']);
    const plain = segmentRequest(args);
    expect(plain).not.toHaveProperty('regularize');
    expect(plain).not.toHaveProperty('smooth');
    expect(segmentRequest({ ...args, shape: 'as-is' })).toEqual(plain);
    expect(segmentRequest({ ...args, shape: 'regularize' })).toEqual({ ...plain, regularize: true });
    expect(segmentRequest({ ...args, shape: 'smooth' })).toEqual({ ...plain, smooth: true });
  });

  it('takes only the known shapes (never both flags)', () => {
    expect(shapeValue('smooth')).toBe('smooth');
    expect(shapeValue('both')).toBe('as-is');
    expect(shapeValue('toString')).toBe('as-is');
    expect(shapeValue(undefined)).toBe('as-is');
    expect(shapeFields('nonsense')).toEqual({});
    expect(shapeFields('regularize')).toEqual({ regularize: true });
  });

  it('asks a request again with another shape, the rest unchanged', () => {
    const reg = segmentRequest({ ...args, shape: 'regularize' });
    const smooth = withShape(reg, 'smooth');
    expect(smooth).toEqual({ ...segmentRequest(args), smooth: true });
    expect(smooth).not.toHaveProperty('regularize');
    expect(withShape(smooth, 'as-is')).toEqual(segmentRequest(args));
    expect(reg.regularize).toBe(true); // not changed in place
  });
});
