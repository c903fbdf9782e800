// Vulkan bring-up for models whose signature says "device vulkan" (see vulkan_device.cc).
#ifndef ATROUS_VULKAN_DEVICE_H_
#define ATROUS_VULKAN_DEVICE_H_

#include <string>

namespace atrous {

// true when the project's Vulkan backend (libatrous_vulkan.so) is loaded and found a Vulkan device; false with
// `problem` set to a sentence naming what is missing.
bool PrepareVulkan(std::string* problem);

}  // namespace atrous

#endif  // ATROUS_VULKAN_DEVICE_H_
