// The composer's Camera button: a file input with capture="environment" opens the phone's camera itself, while
// "Attach image" opens the picker (gallery or files). A photo taken here joins the attachments exactly as a
// picked file does: it is handed to #attach-input, whose change handler (attachments.js) decodes and checks it,
// so there is one path for every image.

/**
 * @param {{button: HTMLButtonElement, camera: HTMLInputElement, attach: HTMLInputElement}} el
 */
export function wireCamera({ button, camera, attach }) {
  button.addEventListener("click", () => camera.click());
  camera.addEventListener("change", () => {
    const files = [...(camera.files ?? [])];
    camera.value = "";
    if (!files.length) return;
    const transfer = new DataTransfer();
    for (const file of files) transfer.items.add(file);
    attach.files = transfer.files;
    attach.dispatchEvent(new Event("change"));
  });
}
