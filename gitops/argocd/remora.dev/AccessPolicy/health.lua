-- Argo CD health of a remora.dev AccessPolicy, read from the conditions the Remora
-- controller writes. Argo CD hands the object over as `obj`. Written for Lua 5.1 (Argo
-- CD's interpreter); the tests run it with Lua 5.4.
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
local programmed = condition("Programmed")
if programmed ~= nil and programmed.status ~= "True" then
  if programmed.reason == "RejectedByProxy" then
    return { status = "Degraded", message = says(programmed) }
  end
  return { status = "Progressing", message = says(programmed) }
end
local ready = condition("Ready")
if ready ~= nil then
  return { status = "Healthy", message = ready.message }
end
return { status = "Healthy", message = "The policy is accepted and programmed." }
