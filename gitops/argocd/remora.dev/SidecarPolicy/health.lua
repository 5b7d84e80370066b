-- Argo CD health of a remora.dev SidecarPolicy, read from the conditions the Remora
-- controller writes: its validation, its sidecar rollout and the proxies it governs. Argo
-- CD hands the object over as `obj`. Written for Lua 5.1 (Argo CD's interpreter); the
-- tests run it with Lua 5.4.
local function condition(type)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function says(c)
  return c.type .. " is " .. c.status .. " (" .. (c.reason or "") .. "): " .. (c.message or "")
end

local function lagging(observed)
  local generation = obj.metadata.generation
  return generation ~= nil and observed ~= nil and observed < generation
end

if obj.status == nil or obj.status.observedGeneration == nil or condition("Accepted") == nil then
  return { status = "Progressing", message = "Waiting for the Remora controller to report the policy's status." }
end
if lagging(obj.status.observedGeneration) then
  return {
    status = "Progressing",
    message = string.format("Waiting for the Remora controller to observe generation %d (the status describes %d).",
      obj.metadata.generation, obj.status.observedGeneration),
  }
end
local accepted = condition("Accepted")
if accepted.status == "False" then
  return { status = "Degraded", message = says(accepted) }
end
-- A proxy's NACK, a rolled-back or refused rollout, a failed health gate.
local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  return { status = "Degraded", message = says(degraded) }
end
local progressing = condition("Progressing")
if progressing ~= nil and progressing.status == "True" then
  return { status = "Progressing", message = says(progressing) }
end
if progressing ~= nil and progressing.reason == "Paused" then
  return { status = "Suspended", message = says(progressing) }
end
local ready = condition("Ready")
if ready ~= nil then
  return { status = "Healthy", message = ready.message }
end
return { status = "Healthy", message = "The policy is accepted and no rollout is under way." }
